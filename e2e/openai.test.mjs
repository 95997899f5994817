// openai-node, the official OpenAI JavaScript SDK, against the dispatcher's
// OpenAI-compatible /v1 routes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import OpenAI, { NotFoundError } from 'openai'
import { url, simURL, chatModel, embedModel, unknownModel } from './env.mjs'

/**
 * Returns an SDK client for base, and a function giving the raw text of the
 * last response, so a test can see the bytes under the SDK's parsing (the SDK
 * ends a stream quietly both at [DONE] and at the end of the body).
 */
function client (base) {
  let last = null
  const openai = new OpenAI({
    baseURL: `${base}/v1`,
    apiKey: 'ollama', // Ollama ignores it; the SDK wants one.
    maxRetries: 0, // A retry would hide a failed first answer.
    fetch: async (input, init) => {
      const res = await fetch(input, init)
      last = res.clone()
      return res
    },
  })
  return { openai, lastBody: () => last.text() }
}

const { openai, lastBody } = client(url)
const sim = simURL && client(simURL).openai

const messages = [
  { role: 'system', content: 'Answer briefly.' },
  { role: 'user', content: 'Why is the sky blue?' },
]

test('chat completion, not streamed', async () => {
  const res = await openai.chat.completions.create({ model: chatModel, messages })
  assert.equal(res.object, 'chat.completion')
  assert.equal(res.model, chatModel)
  assert.match(res.id, /^chatcmpl-/)
  assert.equal(res.choices.length, 1)
  assert.equal(res.choices[0].message.role, 'assistant')
  assert.equal(res.choices[0].finish_reason, 'stop')
  assert.ok(res.choices[0].message.content.length > 0, 'the answer is empty')
  assert.equal(res.usage.total_tokens, res.usage.prompt_tokens + res.usage.completion_tokens)
  assert.ok(res.usage.completion_tokens > 0)
  if (sim) {
    const want = await sim.chat.completions.create({ model: chatModel, messages })
    assert.equal(res.choices[0].message.content, want.choices[0].message.content)
    assert.deepEqual(res.usage, want.usage)
  }
})

test('chat completion, streamed with usage', async () => {
  const stream = await openai.chat.completions.create({
    model: chatModel, messages, stream: true, stream_options: { include_usage: true },
  })
  const chunks = []
  for await (const chunk of stream) chunks.push(chunk)
  const raw = await lastBody()
  assert.match(raw, /data: \[DONE\]\n\n$/, 'the stream ends with [DONE]')
  assert.equal(raw.split('[DONE]').length, 2, 'exactly one [DONE]')

  const usage = chunks.at(-1)
  assert.deepEqual(usage.choices, [], 'the usage chunk comes last and has no choices')
  const deltas = chunks.slice(0, -1)
  assert.ok(deltas.length >= 3, `got ${deltas.length} delta chunks, want a stream of several`)
  for (const c of deltas) {
    assert.equal(c.object, 'chat.completion.chunk')
    assert.equal(c.choices.length, 1)
  }
  // As Ollama 0.32's ChatWriter: the role in the first chunk only, the
  // finish reason in a chunk of its own with an empty delta.
  assert.equal(deltas[0].choices[0].delta.role, 'assistant')
  assert.ok(deltas.slice(1).every((c) => c.choices[0].delta.role === undefined), 'the role only in the first chunk')
  assert.equal(deltas.at(-1).choices[0].finish_reason, 'stop')
  assert.deepEqual(deltas.at(-1).choices[0].delta, {})
  assert.ok(deltas.slice(0, -1).every((c) => c.choices[0].finish_reason === null))

  const text = deltas.map((c) => c.choices[0].delta.content ?? '').join('')
  const whole = await openai.chat.completions.create({ model: chatModel, messages })
  assert.equal(text, whole.choices[0].message.content)
  assert.deepEqual(usage.usage, whole.usage)
})

test('completion, streamed and not', async () => {
  const req = { model: chatModel, prompt: 'Once upon a time', max_tokens: 12 }
  const whole = await openai.completions.create(req)
  assert.equal(whole.object, 'text_completion')
  assert.equal(whole.choices.length, 1)
  assert.equal(whole.choices[0].finish_reason, 'length', 'max_tokens ends the text')
  assert.equal(whole.usage.completion_tokens, 12)
  assert.ok(whole.choices[0].text.length > 0)

  const stream = await openai.completions.create({ ...req, stream: true, stream_options: { include_usage: true } })
  const chunks = []
  for await (const chunk of stream) chunks.push(chunk)
  assert.match(await lastBody(), /data: \[DONE\]\n\n$/, 'the stream ends with [DONE]')
  const text = chunks.flatMap((c) => c.choices.map((ch) => ch.text)).join('')
  assert.equal(text, whole.choices[0].text)
  assert.ok(chunks.length >= 3, `got ${chunks.length} chunks, want a stream of several`)
  assert.deepEqual(chunks.at(-1).choices, [])
  assert.deepEqual(chunks.at(-1).usage, whole.usage)
  if (sim) {
    const want = await sim.completions.create(req)
    assert.equal(whole.choices[0].text, want.choices[0].text)
  }
})

test('embeddings', async () => {
  const input = ['The sky is blue.', 'Grass is green.']
  // Without encoding_format the SDK asks for base64 and decodes it itself.
  const viaBase64 = await openai.embeddings.create({ model: embedModel, input })
  assert.match(await lastBody(), /"embedding":"[A-Za-z0-9+/=]+"/, 'the SDK asked for base64 and got it')
  const viaFloat = await openai.embeddings.create({ model: embedModel, input, encoding_format: 'float' })
  for (const res of [viaBase64, viaFloat]) {
    assert.equal(res.object, 'list')
    assert.equal(res.model, embedModel)
    assert.deepEqual(res.data.map((d) => d.index), [0, 1])
    for (const d of res.data) assert.equal(d.embedding.length, 8)
    assert.ok(res.usage.prompt_tokens > 0)
  }
  // The float32 vectors are the same whichever way they travelled.
  const f32 = (res) => res.data.map((d) => d.embedding.map(Math.fround))
  assert.deepEqual(f32(viaBase64), f32(viaFloat))
  assert.notDeepEqual(viaFloat.data[0].embedding, viaFloat.data[1].embedding)
  if (sim) {
    const want = await sim.embeddings.create({ model: embedModel, input, encoding_format: 'float' })
    assert.deepEqual(viaFloat.data, want.data)
  }
})

test('models, listed and retrieved', async () => {
  const ids = []
  for await (const m of openai.models.list()) {
    assert.equal(m.object, 'model')
    assert.equal(m.owned_by, 'library')
    assert.ok(m.created > 0)
    ids.push(m.id)
  }
  ids.sort()
  assert.ok(ids.includes(chatModel) && ids.includes(embedModel), `models ${ids}`)
  assert.equal(new Set(ids).size, ids.length, 'a model several workers have is listed once')
  const m = await openai.models.retrieve(chatModel)
  assert.equal(m.id, chatModel)
  assert.equal(m.object, 'model')
  if (sim) {
    const want = []
    for await (const m of sim.models.list()) want.push(m.id)
    assert.deepEqual(ids, want.sort())
  }
})

test('unknown model', async (t) => {
  // As Ollama 0.32: each handler's own words, and the OpenAI middleware
  // types the error by its status, not_found_error.
  const isNotFound = (message) => (err) => {
    assert.ok(err instanceof NotFoundError, `got ${err?.constructor?.name}: ${err}, want NotFoundError`)
    assert.equal(err.status, 404)
    assert.equal(err.error?.message, message)
    assert.equal(err.type, 'not_found_error')
    return true
  }
  const notFound = `model '${unknownModel}' not found`
  const calls = {
    'chat': [(c) => c.chat.completions.create({ model: unknownModel, messages }), notFound],
    'chat streamed': [(c) => c.chat.completions.create({ model: unknownModel, messages, stream: true }), notFound],
    'completion': [(c) => c.completions.create({ model: unknownModel, prompt: 'hi' }), notFound],
    'embeddings': [(c) => c.embeddings.create({ model: unknownModel, input: 'hi' }), `model "${unknownModel}" not found, try pulling it first`],
    'retrieve': [(c) => c.models.retrieve(unknownModel), `model '${unknownModel}:latest' not found`],
  }
  for (const [name, [call, message]] of Object.entries(calls)) {
    await t.test(name, async () => {
      await assert.rejects(call(openai), isNotFound(message))
      if (sim) await assert.rejects(call(sim), isNotFound(message))
    })
  }
})
