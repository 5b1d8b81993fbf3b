//! Throughput of `hcpipe::cache::hash::hash_file` on a 1 GiB file, on one
//! core and on every core (issue 8, table 4; target: >= 2.5 GB/s on one core).
//!
//! The file is `bench/data/big.bin` (or `$HCPIPE_BENCH_FILE`); it is created
//! with pseudo-random bytes when missing, and read from the page cache: this
//! measures hashing, not the disk.
//!
//! Two clocks. `hash_file/*` is wall time, what a user waits for. On a shared
//! machine wall time mostly measures the other users, so `cpu/*` measures the
//! same work in process CPU time (user + system, every thread): on one thread
//! that is the throughput of one core, whatever the load. The `cpu/strategy:*`
//! functions hash the same file in the ways `hash_file` could (mmap or read,
//! buffer size, `update` or `update_rayon`), to show where its time goes.
//!
//! Run: `cargo bench --bench hash` (or `make bench-hash`, which also writes
//! the figures into BENCHMARKS.md).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

const SIZE: u64 = 1 << 30;

fn bench_file() -> PathBuf {
    let path = std::env::var_os("HCPIPE_BENCH_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/data/big.bin"));
    let ok = std::fs::metadata(&path).map(|m| m.len() == SIZE);
    if !matches!(ok, Ok(true)) {
        make_file(&path);
    }
    path
}

/// 1 GiB of blake3 XOF output: incompressible, reproducible, and fast to make.
fn make_file(path: &Path) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    }
    let tmp = path.with_extension("bin.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", tmp.display())),
    );
    let mut xof = blake3::Hasher::new().update(b"hcpipe bench").finalize_xof();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..SIZE / buf.len() as u64 {
        xof.fill(&mut buf);
        out.write_all(&buf)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
    }
    out.flush()
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("cannot rename to {}: {e}", path.display()));
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool")
}

/// CPU time of the whole process (every thread, user + system), from
/// `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`.
struct ProcessCpuTime;

fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ProcessCpuTime {
    type Intermediate = u64;
    type Value = Duration;
    fn start(&self) -> u64 {
        process_cpu_ns()
    }
    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(process_cpu_ns().saturating_sub(start))
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds either way: wall time's formatter prints them well.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn configure<'a, M: Measurement>(c: &'a mut Criterion<M>, name: &str) -> BenchmarkGroup<'a, M> {
    let mut g = c.benchmark_group(name);
    // One iteration reads 1 GiB: few samples, but each is long and steady.
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(SIZE));
    g
}

fn hash_file(c: &mut Criterion) {
    let path = bench_file();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut g = configure(c, "hash_file");
    let one = pool(1);
    g.bench_function("one_core", |b| {
        b.iter(|| one.install(|| hcpipe::cache::hash::hash_file(&path).expect("hash")))
    });
    let all = pool(cores);
    g.bench_function("all_cores", |b| {
        b.iter(|| all.install(|| hcpipe::cache::hash::hash_file(&path).expect("hash")))
    });
    g.finish();
}

/// One core's throughput in CPU time, and the ways to feed a file to
/// blake3: where does the time go?
fn cpu(c: &mut Criterion<ProcessCpuTime>) {
    let path = bench_file();
    let one = pool(1);
    let mut g = configure(c, "cpu");
    g.bench_function("hash_file:one_core", |b| {
        b.iter(|| one.install(|| hcpipe::cache::hash::hash_file(&path).expect("hash")))
    });
    g.bench_function("strategy:mmap+update_rayon", |b| {
        b.iter(|| {
            one.install(|| {
                let mut h = blake3::Hasher::new();
                h.update_mmap_rayon(&path).expect("hash");
                h.finalize()
            })
        })
    });
    g.bench_function("strategy:mmap+update", |b| {
        b.iter(|| {
            let mut h = blake3::Hasher::new();
            h.update_mmap(&path).expect("hash");
            h.finalize()
        })
    });
    for kib in [64usize, 1024] {
        g.bench_function(format!("strategy:read_{kib}KiB+update"), |b| {
            let mut buf = vec![0u8; kib * 1024];
            b.iter(|| {
                let mut f = std::fs::File::open(&path).expect("open");
                let mut h = blake3::Hasher::new();
                loop {
                    let n = f.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                h.finalize()
            })
        });
    }
    g.finish();
}

criterion_group!(wall, hash_file);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ProcessCpuTime);
    targets = cpu
}
criterion_main!(wall, cpu_time);
