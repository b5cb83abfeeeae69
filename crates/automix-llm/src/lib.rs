//! Model access for AutoMix: the provider trait every model call goes through, an
//! OpenAI-compatible HTTP backend and test doubles. Built by issue #3; empty until then.
