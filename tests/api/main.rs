//! latchkey's integration tests: one binary, each test on its own temporary
//! data directory and ephemeral port, talking real HTTP to a real server.

mod admin;
mod binary;
mod connections;
mod embedded;
mod errors;
mod flow;
mod forged_tokens;
mod helpers;
mod hostile_input;
mod jwks;
mod mail;
mod mfa;
mod moving;
mod nodes;
mod openapi;
mod operations;
mod passkeys;
mod races;
mod refresh;
mod security;
mod sessions;
mod storage;
