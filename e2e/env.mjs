// Where the tests find the servers, from the environment.

/** The base URL of the OllamaMax dispatcher under test, e.g. http://127.0.0.1:11435. */
export const url = process.env.OLLAMAMAX_URL
if (!url) {
  throw new Error('OLLAMAMAX_URL is not set: give the base URL of an OllamaMax dispatcher, e.g. OLLAMAMAX_URL=http://127.0.0.1:11435')
}

/**
 * The base URL of a simulated Ollama behind the dispatcher (test/clients sets
 * it), or null. The simulator is deterministic, so when it is set every
 * answer through the dispatcher must equal the simulator's own.
 */
export const simURL = process.env.OLLAMAMAX_SIM_URL || null

export const chatModel = 'llama3.2:latest'
export const embedModel = 'nomic-embed-text:latest'
export const unknownModel = 'no-such-model'

/** The base URL of a second dispatcher of the same fleet, or null. */
export const url2 = process.env.OLLAMAMAX_URL_2 || null

/**
 * The API keys keys.test.mjs uses against a dispatcher that requires them
 * (test/clients creates them), from OLLAMAMAX_KEY_ADMIN, _USER (a user key
 * for every model), _LIMITED (a user key for embedModel only), _RPM (a user
 * key of 120 requests a minute) and _REVOKED (revoked before the run); null
 * unless all are set, and keys.test.mjs then skips.
 */
export const keys = (() => {
  const names = ['admin', 'user', 'limited', 'rpm', 'revoked']
  const secrets = names.map((n) => process.env[`OLLAMAMAX_KEY_${n.toUpperCase()}`])
  return secrets.every(Boolean) ? Object.fromEntries(names.map((n, i) => [n, secrets[i]])) : null
})()
