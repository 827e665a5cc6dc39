//! Building an image from a program, with kiln's executor as a library.
//!
//!     cargo run -p kiln-executor --example embed -- CONTEXT_DIR [TAG]
//!
//! The context needs a Dockerfile; `tests/examples/app` with a busybox base from
//! `scripts/busybox-base.sh` works (this example passes `--build-context
//! busybox=oci-layout://$BUSYBOX_LAYOUT` when that variable is set). Progress arrives as
//! typed events on a channel and is printed here, by the program, in its own format: the
//! library never prints.

use std::path::PathBuf;

use kiln_executor::sandbox::prelude;
use kiln_executor::{Build, BuildOptions, Event, NamedContext};

fn main() {
    // The sandbox's helper processes are this very binary, and the build runs inside a
    // user namespace this binary enters by running itself again: let kiln do that first.
    if let Some(code) = prelude() {
        std::process::exit(code);
    }
    let args: Vec<String> = std::env::args().collect();
    let Some(context) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: embed CONTEXT_DIR [TAG]");
        std::process::exit(2);
    };
    let tag = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "embedded:latest".into());
    let root = std::env::var_os("KILN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kiln-embed-example"));
    // Everything not set here has a default: the namespace's id mapping, this program
    // as the sandbox's helper, zstd layers, the `auto` snapshotter.
    let mut options = BuildOptions::builder(&context).root(root).tag(tag.clone());
    if let Ok(layout) = std::env::var("BUSYBOX_LAYOUT") {
        options = options.named_context(
            "busybox",
            NamedContext::OciLayout {
                path: layout.into(),
                tag: None,
                digest: None,
            },
        );
    }
    let opts = match options.build() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("reading {}/Dockerfile: {e}", context.display());
            std::process::exit(1);
        }
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let builder = std::thread::spawn(move || Build::new(opts).run_with_channel(&tx));
    for event in rx {
        match event {
            Event::StepStarted {
                stage,
                index,
                total,
                text,
                ..
            } => {
                println!("[embed] {stage} {index}/{total}: {text}")
            }
            Event::Output { bytes, .. } => {
                print!("[embed]   | {}", String::from_utf8_lossy(&bytes))
            }
            Event::StepDone { layer: Some(l), .. } => println!("[embed]   layer {l}"),
            Event::Warning(w) => println!("[embed] warning: {w}"),
            Event::ImageWritten { config, .. } => println!("[embed] image {config} tagged {tag}"),
            _ => {}
        }
    }
    match builder.join() {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            eprintln!("[embed] build failed: {e}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(1),
    }
}
