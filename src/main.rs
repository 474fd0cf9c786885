#![forbid(unsafe_code)]
//! The `gateway` binary: parses flags and hands over to the library.

/// jemalloc instead of glibc's malloc, with its background thread purging freed pages: in
/// `bench/` (issue 12), after 1,000 concurrent 150 KiB requests glibc kept about 200 MiB
/// for good (freed memory stayed in its arenas), jemalloc is back near idle within 30 s,
/// at no cost in CPU per request.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Purges dirty pages on a timer (its default decay, 10 s) instead of only when some
    // later allocation happens to pass by: an idle gateway returns what a burst took.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    gateway::cli::main()
}
