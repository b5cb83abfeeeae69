//! Integration tests of automix-llm against the in-process fake OpenAI server.

mod faults;
mod real_llama;
