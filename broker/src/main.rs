// jemalloc, not the system allocator: measured on the request path (about 15% more
// ES256 exchanges a second at 32 connections, the CPU per request down as much) and on
// large rule sets, where glibc kept the memory a load had freed (200 MiB resident for
// 100,000 rules over 10,000 issuers, 460 MiB after a reload) and jemalloc's background
// thread gives it back within about a second (75 MiB). Its options are compiled in from
// `.cargo/config.toml`; docs/performance.md ("Allocator") has the figures.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    broker::cli::main()
}
