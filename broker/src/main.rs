// jemalloc, not the system allocator: faster on the request path, and it gives back the
// memory a configuration load frees, which glibc kept (docs/performance.md, "Allocator").
// Its options are compiled in from `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    broker::cli::main()
}
