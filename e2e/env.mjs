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
