//! The `reklama` binary: everything lives in the library; see `main_app`.

/// mimalloc instead of the C library's allocator. glibc gives each thread that allocates under
/// contention an arena of its own (up to eight per core) and rarely hands their freed pages back:
/// caches filled and evicted from the request workers, database threads and image pool left the
/// process growing by tens of MB a minute under a steady load (bench/SOAK.md). mimalloc frees
/// across threads into the owning page and returns unused pages to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    reklama::main_app::cli::main()
}
