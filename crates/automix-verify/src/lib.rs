//! Verification for AutoMix: few-shot self-verification prompts, verdict parsing,
//! k-sample and logprob confidence, self-consistency. Built by issue #4; empty until then.
