// ollama-js, the official Ollama JavaScript client, against the dispatcher's
// native /api routes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Ollama } from 'ollama'
import { url, simURL, chatModel, embedModel, unknownModel } from './env.mjs'

const ollama = new Ollama({ host: url })
const sim = simURL && new Ollama({ host: simURL })

const messages = [
  { role: 'system', content: 'Answer briefly.' },
  { role: 'user', content: 'Why is the sky blue?' },
]

/** Collects a streamed response: every part, and the text they add up to. */
async function collect (stream, text) {
  const parts = []
  for await (const part of stream) parts.push(part)
  return { parts, text: parts.map(text).join(''), last: parts.at(-1) }
}

test('chat, not streamed', async () => {
  const res = await ollama.chat({ model: chatModel, messages, stream: false })
  assert.equal(res.done, true)
  assert.equal(res.done_reason, 'stop')
  assert.equal(res.model, chatModel)
  assert.equal(res.message.role, 'assistant')
  assert.ok(res.message.content.length > 0, 'the answer is empty')
  assert.ok(res.eval_count > 0 && res.prompt_eval_count > 0, `no token counts in ${JSON.stringify(res)}`)
  if (sim) {
    const want = await sim.chat({ model: chatModel, messages, stream: false })
    assert.equal(res.message.content, want.message.content)
    assert.equal(res.eval_count, want.eval_count)
  }
})

test('chat, streamed', async () => {
  const got = await collect(await ollama.chat({ model: chatModel, messages, stream: true }), (p) => p.message.content)
  const whole = await ollama.chat({ model: chatModel, messages, stream: false })
  assert.ok(got.parts.length >= 3, `got ${got.parts.length} parts, want a stream of several`)
  assert.deepEqual(got.parts.map((p) => p.done), [...Array(got.parts.length - 1).fill(false), true], 'only the last part is done')
  assert.ok(got.parts.every((p) => p.message.role === 'assistant'))
  assert.equal(got.last.done_reason, 'stop')
  assert.equal(got.text, whole.message.content)
  if (sim) {
    const want = await collect(await sim.chat({ model: chatModel, messages, stream: true }), (p) => p.message.content)
    assert.equal(got.text, want.text)
    assert.equal(got.parts.length, want.parts.length)
  }
})

test('generate, streamed and not', async () => {
  const req = { model: chatModel, prompt: 'Once upon a time', options: { num_predict: 12 } }
  const whole = await ollama.generate({ ...req, stream: false })
  assert.equal(whole.done, true)
  assert.equal(whole.done_reason, 'length', 'num_predict ends the text')
  assert.equal(whole.eval_count, 12)
  assert.ok(whole.response.length > 0)

  const got = await collect(await ollama.generate({ ...req, stream: true }), (p) => p.response)
  assert.ok(got.parts.length >= 3, `got ${got.parts.length} parts, want a stream of several`)
  assert.equal(got.last.done, true)
  assert.equal(got.last.done_reason, 'length')
  assert.equal(got.text, whole.response)
  if (sim) {
    const want = await sim.generate({ ...req, stream: false })
    assert.equal(whole.response, want.response)
  }
})

test('embed and the legacy embeddings', async () => {
  const input = ['The sky is blue.', 'Grass is green.']
  const res = await ollama.embed({ model: embedModel, input })
  assert.equal(res.model, embedModel)
  assert.equal(res.embeddings.length, 2)
  for (const e of res.embeddings) assert.equal(e.length, 8)
  assert.notDeepEqual(res.embeddings[0], res.embeddings[1])
  assert.ok(res.prompt_eval_count > 0)

  const legacy = await ollama.embeddings({ model: embedModel, prompt: input[0] })
  assert.equal(legacy.embedding.length, 8)
  if (sim) {
    assert.deepEqual(res.embeddings, (await sim.embed({ model: embedModel, input })).embeddings)
    assert.deepEqual(legacy.embedding, (await sim.embeddings({ model: embedModel, prompt: input[0] })).embedding)
  }
})

test('list models', async () => {
  const res = await ollama.list()
  const names = res.models.map((m) => m.name).sort()
  assert.ok(names.includes(chatModel) && names.includes(embedModel), `models ${names}`)
  assert.equal(new Set(names).size, names.length, 'a model several workers have is listed once')
  for (const m of res.models) {
    assert.equal(m.model, m.name)
    assert.match(m.digest, /^[0-9a-f]{64}$/)
    assert.ok(m.size > 0)
    assert.equal(typeof m.details.family, 'string')
  }
  if (sim) {
    const want = await sim.list()
    assert.deepEqual(names, want.models.map((m) => m.name).sort())
  }
})

test('unknown model', async (t) => {
  // ollama-js throws its ResponseError (not exported) with the HTTP status and Ollama's message.
  const want = { name: 'ResponseError', status_code: 404, error: `model '${unknownModel}' not found` }
  // Ollama 0.32's embedding handlers say it as they fail to schedule the model.
  const wantEmbed = { ...want, error: `model "${unknownModel}" not found, try pulling it first` }
  const calls = {
    'chat': [(c) => c.chat({ model: unknownModel, messages }), want],
    'chat streamed': [(c) => c.chat({ model: unknownModel, messages, stream: true }), want],
    'generate': [(c) => c.generate({ model: unknownModel, prompt: 'hi' }), want],
    'embed': [(c) => c.embed({ model: unknownModel, input: 'hi' }), wantEmbed],
  }
  for (const [name, [call, error]] of Object.entries(calls)) {
    await t.test(name, async () => {
      await assert.rejects(call(ollama), error)
      if (sim) await assert.rejects(call(sim), error)
    })
  }
})

test('load and unload: ps follows at once', async () => {
  // A model of its own, which no other test file loads meanwhile: pulled
  // to every worker, listed as soon as the pull is answered; or, where the
  // workers cannot pull (real Ollamas offline), one they have, named by
  // OLLAMAMAX_RESIDENCY_MODEL.
  const given = process.env.OLLAMAMAX_RESIDENCY_MODEL
  const model = given || 'e2e-residency:latest'
  if (!given) await ollama.pull({ model, stream: false })
  try {
    assert.ok((await ollama.list()).models.some((m) => m.name === model), `${model} is not listed right after its pull`)
    const running = async () => (await ollama.ps()).models.map((m) => m.name)
    assert.ok(!(await running()).includes(model), 'loaded before anything used it')
    // Ollama's way to load a model: a generate with an empty prompt.
    const loaded = await ollama.generate({ model, prompt: '' })
    assert.equal(loaded.done, true)
    assert.ok((await running()).includes(model), `ps right after the load: ${await running()}`)
    // ... and to unload it (ollama stop): keep_alive 0 as well.
    const unloaded = await ollama.generate({ model, prompt: '', keep_alive: 0 })
    assert.equal(unloaded.done_reason, 'unload')
    assert.ok(!(await running()).includes(model), `ps right after the unload: ${await running()}`)
  } finally {
    if (!given) await ollama.delete({ model })
  }
  if (!given) assert.ok(!(await ollama.list()).models.some((m) => m.name === model), `${model} is listed right after its delete`)
})
