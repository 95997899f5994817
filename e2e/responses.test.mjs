// openai-node's Responses API (what Codex speaks to Ollama) against the
// dispatcher's /v1/responses, streamed and not.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import OpenAI, { NotFoundError } from 'openai'
import { url, simURL, chatModel, unknownModel } from './env.mjs'

function client (base) {
  return new OpenAI({ baseURL: `${base}/v1`, apiKey: 'ollama', maxRetries: 0 })
}

const openai = client(url)
const sim = simURL && client(simURL)

const req = { model: chatModel, instructions: 'Answer briefly.', input: 'Why is the sky blue?', max_output_tokens: 24, temperature: 0 }

test('responses.create, not streamed', async () => {
  const res = await openai.responses.create(req)
  assert.equal(res.object, 'response')
  assert.equal(res.status, 'completed')
  assert.equal(res.model, chatModel)
  assert.match(res.id, /^resp_/)
  assert.ok(res.output_text.length > 0, 'the answer is empty')
  assert.ok(res.usage.input_tokens > 0)
  assert.ok(res.usage.output_tokens > 0 && res.usage.output_tokens <= req.max_output_tokens)
  assert.equal(res.usage.total_tokens, res.usage.input_tokens + res.usage.output_tokens)
  if (sim) {
    const want = await sim.responses.create(req)
    assert.equal(res.output_text, want.output_text)
    assert.deepEqual(res.usage, want.usage)
  }
})

test('responses.create, streamed: events in order, numbered, the same answer', async () => {
  const stream = await openai.responses.create({ ...req, stream: true })
  const events = []
  for await (const ev of stream) events.push(ev)
  const types = events.map((e) => e.type)
  assert.equal(types[0], 'response.created')
  assert.equal(types.at(-1), 'response.completed')
  assert.equal(types.filter((t) => t === 'response.created').length, 1)
  assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i), 'sequence numbers from 0, no gaps')
  const deltas = events.filter((e) => e.type === 'response.output_text.delta')
  assert.ok(deltas.length >= 3, `events ${types}`)
  const text = deltas.map((e) => e.delta).join('')
  const done = events.find((e) => e.type === 'response.output_text.done')
  assert.equal(done.text, text, 'output_text.done holds the whole text')
  const completed = events.at(-1).response
  assert.equal(completed.status, 'completed')
  assert.equal(completed.output[0].content[0].text, text)
  const ids = new Set(deltas.map((e) => e.item_id))
  assert.equal(ids.size, 1, 'one output item')
  assert.equal(completed.output[0].id, [...ids][0])
  const whole = await openai.responses.create(req)
  assert.equal(text, whole.output_text)
  assert.deepEqual(completed.usage, whole.usage)
})

test('an unknown model is the SDK\'s NotFoundError', async () => {
  await assert.rejects(openai.responses.create({ ...req, model: unknownModel }), (err) => {
    assert.ok(err instanceof NotFoundError, `got ${err?.constructor?.name}: ${err?.message}`)
    assert.equal(err.status, 404)
    assert.match(err.message, new RegExp(unknownModel))
    return true
  })
})
