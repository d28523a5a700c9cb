//! Background work. Each job exposes `run_once`, which does one round and reports what
//! it did (tests call it directly), and `run`, the loop that `serve` starts.

pub mod notice_sender;
