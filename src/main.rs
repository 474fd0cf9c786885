#![forbid(unsafe_code)]
//! The `gateway` binary: parses flags and hands over to the library.

/// jemalloc instead of glibc's malloc, with its background thread purging freed pages: in
/// `bench/` (issue 12), after 1,000 concurrent 150 KiB requests glibc kept about 200 MiB
/// for good (freed memory stayed in its arenas), jemalloc is back near idle within 30 s,
/// at no cost in CPU per request. Its options compiled in (`.cargo/config.toml`) return freed
/// pages after about 1 s instead of 10 s, so memory a burst took is back before the next.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Purges dirty pages on a timer (`dirty_decay_ms`, 1 s here) instead of only when some
    // later allocation happens to pass by: an idle gateway returns what a burst took.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    gateway::cli::main()
}

#[cfg(test)]
mod tests {
    use tikv_jemalloc_ctl::{Access, AsName};

    /// `.cargo/config.toml` reached jemalloc's build: freed pages age out in 1 s, not 10 s.
    #[test]
    fn jemalloc_returns_freed_pages_within_a_second() {
        let ms: isize = b"opt.dirty_decay_ms\0".name().read().unwrap();
        assert_eq!(
            ms, 1000,
            "JEMALLOC_SYS_WITH_MALLOC_CONF did not reach jemalloc's build"
        );
    }
}
