//! Empty on the host: the programs live in the `greha` binary target, which
//! only aya-build compiles (for `bpfel-unknown-none`). This library exists so
//! that `greha` can name this crate as a build dependency and be rebuilt when
//! the programs change.
#![no_std]
