//! End-to-end tests of the chat system live in `tests/`: they start the real service binaries
//! as processes against the real RabbitMQ and MongoDB-wire server. Build the binaries first
//! (`cargo build --workspace`); `CHAT_BIN_DIR` points elsewhere if needed.
