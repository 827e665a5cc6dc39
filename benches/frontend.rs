//! Frontend throughput: parsing, typed instructions and planning of a large Dockerfile,
//! and word expansion. Run with `cargo bench -p kiln-benches --bench frontend`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln_executor::dockerfile::{self, instructions, shell::Lexer};
use kiln_executor::plan::{self, PlanOptions};

fn frontend(c: &mut Criterion) {
    let text = kiln_benches::sample_dockerfile(200);
    let mut group = c.benchmark_group("frontend");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("parse", |b| {
        b.iter(|| dockerfile::parse("Dockerfile", text.as_bytes()))
    });
    group.bench_function("parse+instructions+plan", |b| {
        b.iter(|| {
            let doc = dockerfile::parse("Dockerfile", text.as_bytes()).ok()?;
            instructions::parse_document(&doc).ok()?;
            plan::plan(&doc, &PlanOptions::default()).ok()
        })
    });
    group.finish();

    let env: Vec<(String, String)> = vec![
        ("PWD".into(), "/home".into()),
        ("VERSION".into(), "1.22.3".into()),
    ];
    let lexer = Lexer::new('\\');
    c.bench_function("shell/process_word", |b| {
        b.iter(|| lexer.process_word("golang:${VERSION%.*}-${OS:-linux}/'$PWD'\"$PWD\"", &env))
    });
}

criterion_group!(benches, frontend);
criterion_main!(benches);
