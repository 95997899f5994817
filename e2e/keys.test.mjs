// API keys through ollama-js and openai-node: each SDK raises its own error
// for a request without a key in force (401), for a model or route the key
// may not use (403) and over the key's rate limit (429), and the listings
// leave out the models a key may not use.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { Ollama } from 'ollama'
import OpenAI, { AuthenticationError, NotFoundError, PermissionDeniedError, RateLimitError } from 'openai'
import { url, url2, keys, chatModel, embedModel } from './env.mjs'

const skip = keys ? false : 'no API keys: set OLLAMAMAX_KEY_ADMIN, _USER, _LIMITED, _RPM and _REVOKED (test/clients does)'

const messages = [{ role: 'user', content: 'Why is the sky blue?' }]

/**
 * Returns an openai-node client for the dispatcher at base that presents
 * secret, or no Authorization header at all when it is null, retrying
 * retries times (default none), and the requests it sent: their
 * Authorization, status, retry-after and times.
 */
function openai (secret, { base = url, retries = 0 } = {}) {
  const sent = []
  const client = new OpenAI({
    baseURL: `${base}/v1`,
    // The SDK will not start without a key; a null header is its way to send none.
    apiKey: secret ?? 'unused',
    defaultHeaders: secret ? undefined : { Authorization: null },
    adminAPIKey: null, // Else OPENAI_ADMIN_KEY, if set, would be sent instead of the key.
    ...(retries === null ? {} : { maxRetries: retries }), // null: the SDK's default (two)
    fetch: async (input, init) => {
      const at = { auth: new Headers(init?.headers).get('authorization'), sent: Date.now() }
      const res = await fetch(input, init)
      sent.push({ ...at, status: res.status, retryAfter: res.headers.get('retry-after'), done: Date.now() })
      return res
    },
  })
  return { client, sent }
}

/** Returns an ollama-js client for the dispatcher at base that presents secret (none if null). */
function ollama (secret, base = url) {
  return new Ollama({ host: base, headers: secret ? { Authorization: `Bearer ${secret}` } : {} })
}

/** Returns a RegExp that matches s literally. */
const literal = (s) => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))

/** Returns a validator for assert.rejects: an openai-node error of class, status and code, with a message matching re. */
function openAIError (Class, status, code, re) {
  return (err) => {
    assert.ok(err instanceof Class, `got ${err?.constructor?.name}: ${err}, want ${Class.name}`)
    assert.equal(err.status, status)
    assert.equal(err.code, code)
    assert.match(err.error?.message ?? '', re)
    return true
  }
}

test('without a key: 401, AuthenticationError and ResponseError', { skip }, async () => {
  const { client, sent } = openai(null)
  await assert.rejects(client.chat.completions.create({ model: chatModel, messages }), (err) => {
    openAIError(AuthenticationError, 401, 'invalid_api_key', /missing API key/)(err)
    assert.match(err.headers.get('www-authenticate') ?? '', /^Bearer /)
    return true
  })
  assert.deepEqual(sent.map((s) => s.auth), [null], 'one request, without an Authorization header: a 401 is not retried')
  await assert.rejects(client.models.list(), AuthenticationError)
  // A key that is not one of ours, as Ollama's docs tell OpenAI clients to send.
  await assert.rejects(openai('ollama').client.chat.completions.create({ model: chatModel, messages }),
    openAIError(AuthenticationError, 401, 'invalid_api_key', /malformed API key/))

  const none = ollama(null)
  const unauthorized = { name: 'ResponseError', status_code: 401, error: /missing API key/ }
  await assert.rejects(none.chat({ model: chatModel, messages }), unauthorized)
  await assert.rejects(none.chat({ model: chatModel, messages, stream: true }), unauthorized)
  await assert.rejects(none.list(), unauthorized)
  // Ollama clients probe the version before anything: it needs no key.
  assert.ok((await none.version()).version)
})

test('a revoked key: 401 from every dispatcher', { skip }, async () => {
  for (const base of [url, url2].filter(Boolean)) {
    await assert.rejects(openai(keys.revoked, { base }).client.chat.completions.create({ model: chatModel, messages }),
      openAIError(AuthenticationError, 401, 'invalid_api_key', /revoked API key/), base)
    await assert.rejects(ollama(keys.revoked, base).chat({ model: chatModel, messages }),
      { name: 'ResponseError', status_code: 401, error: /revoked API key/ }, base)
  }
})

test('a key limited to another model: 403, and listings without it', { skip }, async () => {
  const { client } = openai(keys.limited)
  const notAllowed = literal(`model '${chatModel}' is not allowed for API key`)
  const denied = openAIError(PermissionDeniedError, 403, 'permission_denied', notAllowed)
  await assert.rejects(client.chat.completions.create({ model: chatModel, messages }), denied)
  await assert.rejects(client.chat.completions.create({ model: chatModel, messages, stream: true }), denied)
  await assert.rejects(client.completions.create({ model: chatModel, prompt: 'hi' }), denied)
  await assert.rejects(client.models.retrieve(chatModel), NotFoundError, 'a model the key may not use is not there for it')
  const ids = []
  for await (const m of client.models.list()) ids.push(m.id)
  assert.deepEqual(ids, [embedModel])

  const o = ollama(keys.limited)
  const forbidden = { name: 'ResponseError', status_code: 403, error: notAllowed }
  await assert.rejects(o.chat({ model: chatModel, messages }), forbidden)
  await assert.rejects(o.generate({ model: chatModel, prompt: 'hi', stream: true }), forbidden)
  await assert.rejects(o.show({ model: chatModel }), forbidden)
  assert.deepEqual((await o.list()).models.map((m) => m.name), [embedModel])
  assert.ok((await o.ps()).models.every((m) => m.name !== chatModel))

  // The key's own model is served.
  assert.equal((await o.embed({ model: embedModel, input: 'hi' })).embeddings.length, 1)
  assert.equal((await client.embeddings.create({ model: embedModel, input: 'hi' })).data.length, 1)
})

test('over its requests per minute: 429 with retry-after, served again after it', { skip }, async (t) => {
  // 120 a minute: a burst of 120, then one every half second.
  const { client } = openai(keys.rpm)
  const short = { model: chatModel, messages, max_tokens: 1 } // Fast: the test spends the whole burst.
  let served = 0
  let limited
  const began = Date.now()
  while (!limited && served <= 150) {
    try {
      await client.chat.completions.create(short)
      served++
    } catch (err) {
      limited = err
    }
  }
  openAIError(RateLimitError, 429, 'rate_limit_exceeded', /requests per minute/)(limited)
  assert.equal(limited.type, 'requests')
  assert.equal(limited.headers.get('retry-after'), '1', 'Retry-After: a request every half second')
  const refill = Math.floor((2 * (Date.now() - began)) / 1000)
  assert.ok(served >= 120 && served <= 120 + refill + 1, `served ${served} before the 429, want the burst of 120 + ${refill} refilled`)

  // ollama-js, on the native route, spends the same budget.
  const o = ollama(keys.rpm)
  const nativeShort = { model: chatModel, messages, options: { num_predict: 1 } }
  let refused
  for (let i = 0; i < 5 && !refused; i++) {
    await o.chat(nativeShort).catch((err) => { refused = err })
  }
  assert.ok(refused, 'ollama-js was served five times in a row on a spent budget')
  assert.equal(refused.name, 'ResponseError')
  assert.equal(refused.status_code, 429)
  assert.match(refused.error, /requests per minute/)

  // Waiting out Retry-After is waiting for time to pass: the budget refills.
  await sleep(1000 * Number(limited.headers.get('retry-after')))
  await client.chat.completions.create(short)
  await o.chat(nativeShort)

  // openai-node's own retries (two by default) wait what retry-after-ms or
  // retry-after says (client.js retryRequest), so with its defaults an
  // application is served once the budget refills.
  const retrying = openai(keys.rpm, { retries: null })
  for (let i = 0; ; i++) {
    assert.ok(i < 5, 'five requests in a row were each served at the first attempt: the budget never ran out')
    await retrying.client.chat.completions.create(short).catch((err) => {
      throw new Error(`with the SDK's default retries, after attempts ${JSON.stringify(retrying.sent)}: ${err}`)
    })
    const tries = retrying.sent.splice(0)
    if (tries.length === 1) continue // The budget had a request left.
    assert.deepEqual(tries.map((a) => a.status), [429, 200], 'a 429, then served on the retry')
    // Date.now is in whole milliseconds, and node's timers may fire a millisecond early.
    const gap = tries[1].sent - tries[0].done
    assert.ok(gap >= 1000 * Number(tries[0].retryAfter) - 5, `retried ${gap}ms after the 429, want it to wait Retry-After ${tries[0].retryAfter}s`)
    t.diagnostic(`openai-node retried ${gap}ms after a 429 with retry-after ${tries[0].retryAfter}, and was served`)
    break
  }
})

test('a user key may not pull, delete or copy; an admin key may copy', { skip }, async () => {
  const user = ollama(keys.user)
  assert.ok((await user.chat({ model: chatModel, messages, options: { num_predict: 1 } })).done, 'the user key is served')
  const needsAdmin = { name: 'ResponseError', status_code: 403, error: /needs an admin API key/ }
  const copied = 'js-copy:latest'
  await assert.rejects(user.pull({ model: chatModel }), needsAdmin)
  await assert.rejects(user.pull({ model: chatModel, stream: true }), needsAdmin)
  await assert.rejects(user.delete({ model: chatModel }), needsAdmin)
  await assert.rejects(user.copy({ source: chatModel, destination: copied }), needsAdmin)

  const admin = ollama(keys.admin)
  assert.deepEqual(await admin.copy({ source: chatModel, destination: copied }), { status: 'success' })
  const deadline = Date.now() + 5000
  while (!(await admin.list()).models.some((m) => m.name === copied)) {
    assert.ok(Date.now() < deadline, `${copied} not listed 5s after the copy`)
    await sleep(10)
  }
})
