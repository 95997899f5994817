// Package job defines the OllamaMax job protocol: model names and their subject
// encoding, job classes, subject names, message headers and reply kinds.
//
// It is the shared vocabulary of the dispatcher, the worker and any NATS client
// that follows docs/protocol.md. It uses the standard library only and must not
// import NATS or any other package of this module.
package job
