//! Layer export (diff → zstd/gzip blob) and apply of a 2,000-file, ~24 MB tree.
//! `scripts/bench-layer.sh` runs the large comparison against tar/zstd/umoci.
//! Run with `cargo bench -p kiln-benches --bench layer`.

use std::fs;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln_snapshotter::apply::{apply_layer, ApplyOptions};
use kiln_snapshotter::diff::{write_diff, DiffOptions};
use kiln_snapshotter::layer::{LayerCompression, LayerWriter};

fn make_tree(root: &Path) -> u64 {
    let mut total = 0;
    for i in 0..2000u64 {
        let d = root.join(format!("d{:02}", i % 50));
        fs::create_dir_all(&d).unwrap();
        let size = 1024 + (i * 7919) % 20_000;
        let body: Vec<u8> = (0..size)
            .map(|j| (j * 31 + i) as u8 ^ (j as u8 >> 3))
            .collect();
        fs::write(d.join(format!("f{i:05}")), &body).unwrap();
        total += size;
    }
    total
}

fn layer(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    let bytes = make_tree(&tree);
    let mut g = c.benchmark_group("layer");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    for (name, compression) in [
        ("export/zstd", LayerCompression::default()),
        ("export/gzip", LayerCompression::Gzip { level: 6 }),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let blobs = tempfile::tempdir_in(tmp.path()).unwrap();
                let mut w = LayerWriter::new(blobs.path(), compression).unwrap();
                write_diff(&tree, &DiffOptions::default(), &mut w).unwrap();
                w.finish().unwrap()
            })
        });
    }
    let blobs = tmp.path().join("blobs");
    let mut w = LayerWriter::new(&blobs, LayerCompression::default()).unwrap();
    write_diff(&tree, &DiffOptions::default(), &mut w).unwrap();
    let blob = w.finish().unwrap().path;
    g.bench_function("apply/zstd", |b| {
        b.iter(|| {
            let dest = tempfile::tempdir_in(tmp.path()).unwrap();
            apply_layer(
                fs::File::open(&blob).unwrap(),
                dest.path(),
                &ApplyOptions::default(),
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
