/// mimalloc rather than glibc's malloc: measured in docs/performance.md ("Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    broker::cli::main()
}
