// @anthropic-ai/sdk, Anthropic's official JavaScript SDK, against the
// dispatcher's /v1/messages (what Claude Code speaks to Ollama).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import Anthropic, { NotFoundError, BadRequestError } from '@anthropic-ai/sdk'
import { url, simURL, chatModel, unknownModel } from './env.mjs'

function client (base) {
  return new Anthropic({
    baseURL: base,
    apiKey: 'ollama', // Ollama ignores it; the SDK wants one.
    maxRetries: 0, // A retry would hide a failed first answer.
  })
}

const anthropic = client(url)
const sim = simURL && client(simURL)

const req = {
  model: chatModel,
  max_tokens: 24,
  temperature: 0, // Greedy: a real Ollama answers the same twice.
  system: 'Answer briefly.',
  messages: [{ role: 'user', content: 'Why is the sky blue?' }],
}

test('messages.create, not streamed', async () => {
  const msg = await anthropic.messages.create(req)
  assert.equal(msg.type, 'message')
  assert.equal(msg.role, 'assistant')
  assert.equal(msg.model, chatModel)
  assert.match(msg.id, /^msg_/)
  assert.ok(['end_turn', 'max_tokens'].includes(msg.stop_reason), `stop_reason ${msg.stop_reason}`)
  const text = msg.content.filter((b) => b.type === 'text').map((b) => b.text).join('')
  assert.ok(text.length > 0, 'the answer is empty')
  assert.ok(msg.usage.input_tokens > 0)
  assert.ok(msg.usage.output_tokens > 0 && msg.usage.output_tokens <= req.max_tokens)
  if (sim) {
    const want = await sim.messages.create(req)
    assert.deepEqual(msg.content, want.content)
    assert.deepEqual(msg.usage, want.usage)
  }
})

test('messages.stream: events in order, and the same answer as not streamed', async () => {
  const stream = anthropic.messages.stream(req)
  const types = []
  let text = ''
  for await (const ev of stream) {
    types.push(ev.type)
    if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text
  }
  const final = await stream.finalMessage()
  assert.equal(types[0], 'message_start')
  assert.equal(types.at(-1), 'message_stop')
  assert.equal(types.at(-2), 'message_delta')
  assert.equal(types.filter((t) => t === 'message_start').length, 1, 'one message_start')
  assert.ok(types.filter((t) => t === 'content_block_delta').length >= 3, `events ${types}`)
  assert.equal(types.filter((t) => t === 'content_block_start').length, types.filter((t) => t === 'content_block_stop').length)
  const finalText = final.content.filter((b) => b.type === 'text').map((b) => b.text).join('')
  assert.equal(finalText, text)
  const whole = await anthropic.messages.create(req)
  assert.equal(text, whole.content.filter((b) => b.type === 'text').map((b) => b.text).join(''))
  assert.equal(final.usage.output_tokens, whole.usage.output_tokens)
})

test('an unknown model is the SDK\'s NotFoundError, in Anthropic\'s error shape', async () => {
  await assert.rejects(anthropic.messages.create({ ...req, model: unknownModel }), (err) => {
    assert.ok(err instanceof NotFoundError, `got ${err?.constructor?.name}: ${err?.message}`)
    assert.equal(err.status, 404)
    assert.equal(err.error?.type, 'error')
    assert.equal(err.error?.error?.type, 'not_found_error')
    assert.match(err.error?.error?.message, new RegExp(unknownModel))
    return true
  })
})

test('a request without messages is the SDK\'s BadRequestError', async () => {
  await assert.rejects(anthropic.messages.create({ model: chatModel, max_tokens: 8, messages: 'nope' }), (err) => {
    assert.ok(err instanceof BadRequestError, `got ${err?.constructor?.name}: ${err?.message}`)
    assert.equal(err.error?.error?.type, 'invalid_request_error')
    return true
  })
})
