//! The FUSE overlay's hot paths, through a real mount: first lookups (`stat` of every file
//! of a fresh mount over a 2,000-file lower), reads, and file creation; and the floor under
//! them all, one request's round trip (a `getxattr` of a missing name, which the kernel
//! never caches), with the serving thread free to run on any CPU and with it on the
//! caller's (a wakeup across CPUs costs an interrupt, dearer in a VM). Mounting needs a
//! mount (root, or root of a user namespace): run it as root, or as
//! `unshare -Urm cargo bench -p kiln-benches --bench fuse`.

use std::fs;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kiln_snapshotter::backend::fuse::FuseBackend;
use kiln_snapshotter::backend::{Backend, MountGuard};

const FILES: usize = 2000;

fn lower(root: &Path) -> PathBuf {
    let l = root.join("lower");
    for i in 0..FILES {
        let d = l.join(format!("d{:02}", i / 100));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
    }
    l
}

fn mount(root: &Path, lower: &Path, n: usize) -> Box<dyn MountGuard> {
    let (u, w, m) = (
        root.join(format!("u{n}")),
        root.join(format!("w{n}")),
        root.join(format!("m{n}")),
    );
    for d in [&u, &w, &m] {
        fs::create_dir_all(d).unwrap();
    }
    FuseBackend
        .mount(&[lower.to_path_buf()], &u, &w, &m)
        .unwrap()
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(root).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("fuse bench: skipped (run as root, or under unshare -Urm)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let low = lower(tmp.path());
    let mut n = 0;
    let mut g = c.benchmark_group("fuse");
    g.sample_size(10);
    g.bench_function("stat 2000 files, fresh mount", |b| {
        b.iter_batched(
            || {
                n += 1;
                mount(tmp.path(), &low, n)
            },
            |m| {
                for f in files(m.root()) {
                    fs::symlink_metadata(f).unwrap();
                }
                m
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("read 2000 files of 4 KiB, fresh mount", |b| {
        b.iter_batched(
            || {
                n += 1;
                mount(tmp.path(), &low, n)
            },
            |m| {
                for f in files(m.root()) {
                    fs::read(f).unwrap();
                }
                m
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("create 500 files", |b| {
        b.iter_batched(
            || {
                n += 1;
                mount(tmp.path(), &low, n)
            },
            |m| {
                let d = m.root().join("new");
                fs::create_dir(&d).unwrap();
                for i in 0..500 {
                    fs::write(d.join(format!("n{i}")), b"data").unwrap();
                }
                m
            },
            BatchSize::PerIteration,
        )
    });
    for (name, pinned) in [
        ("round trip (getxattr), serving thread on any CPU", false),
        (
            "round trip (getxattr), serving thread on the caller's CPU",
            true,
        ),
    ] {
        // Threads inherit their creator's affinity: pinned while mounting, the serving
        // thread stays on this CPU.
        let all = rustix::thread::sched_getaffinity(None).unwrap();
        if pinned {
            let mut one = rustix::thread::CpuSet::new();
            one.set(rustix::thread::sched_getcpu());
            rustix::thread::sched_setaffinity(None, &one).unwrap();
        }
        n += 1;
        let m = mount(tmp.path(), &low, n);
        let f = files(m.root()).remove(0);
        let mut buf = [0u8; 64];
        g.bench_function(name, |b| {
            b.iter(|| rustix::fs::getxattr(&f, "user.kiln-bench-missing", &mut buf[..]))
        });
        drop(m);
        rustix::thread::sched_setaffinity(None, &all).unwrap();
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
