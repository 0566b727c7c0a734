//! bulkhead's benchmarks and evaluations: the `bulkhead-bench*` and `bulkhead-eval-memory`
//! binaries (`make bench` runs them through tests/bench.sh) and the helpers they share.
//! They print numbers and assert nothing; the tests live in `bulkhead-tests`, whose mock
//! model and harness (`bulkhead_tests::mock_llm`, `bin`, `NEIGHBOUR_ATTACKS`) they reuse.

pub mod bench_util;
pub mod memory_corpus;
