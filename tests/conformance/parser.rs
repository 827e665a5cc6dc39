//! BuildKit's parser cases: every `testfiles/<case>/Dockerfile` must parse to the AST dump
//! in `result` byte for byte, every `testfiles-negative/<case>` must fail, and
//! `testfile-line` must give the documented line numbers (see the conformance README).

use std::path::Path;

use kiln_executor::dockerfile::{dump, parse};

use crate::CaseResult;

pub fn run(dir: &Path) -> Vec<CaseResult> {
    let mut out = Vec::new();
    for (name, case) in cases(&dir.join("testfiles")) {
        let label = format!("parser/{name}");
        let (Ok(df), Ok(expected)) = (
            std::fs::read(case.join("Dockerfile")),
            std::fs::read(case.join("result")),
        ) else {
            out.push(CaseResult::fail(label, "unreadable case files"));
            continue;
        };
        match parse("Dockerfile", &df) {
            Err(e) => out.push(CaseResult::fail(label, format!("parse failed: {e}"))),
            Ok(doc) => {
                let got = dump::dump_document(&doc);
                if got.as_bytes() == expected.as_slice() {
                    out.push(CaseResult::pass(label));
                } else {
                    out.push(CaseResult::fail(
                        label,
                        format!(
                            "dump differs\n--- expected\n{}--- got\n{}",
                            String::from_utf8_lossy(&expected),
                            got
                        ),
                    ));
                }
            }
        }
    }
    for (name, case) in cases(&dir.join("testfiles-negative")) {
        let label = format!("parser/negative/{name}");
        match std::fs::read(case.join("Dockerfile")) {
            Err(e) => out.push(CaseResult::fail(label, format!("unreadable: {e}"))),
            Ok(df) => match parse("Dockerfile", &df) {
                Err(_) => out.push(CaseResult::pass(label)),
                Ok(_) => out.push(CaseResult::fail(label, "parsed, but must fail")),
            },
        }
    }
    out.push(line_numbers(&dir.join("testfile-line/Dockerfile")));
    out
}

fn cases(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn line_numbers(path: &Path) -> CaseResult {
    let label = "parser/testfile-line";
    let Ok(df) = std::fs::read(path) else {
        return CaseResult::fail(label, "unreadable");
    };
    match parse("Dockerfile", &df) {
        Err(e) => CaseResult::fail(label, format!("parse failed: {e}")),
        Ok(doc) => {
            let got: Vec<(usize, usize)> = doc
                .nodes
                .iter()
                .map(|n| (n.start.line, n.end_line))
                .collect();
            let want = vec![(5, 5), (11, 12), (17, 31)];
            if (doc.start_line, doc.end_line) == (5, 31) && got == want {
                CaseResult::pass(label)
            } else {
                CaseResult::fail(
                    label,
                    format!(
                        "root {:?}, instructions {got:?}; want (5, 31), {want:?}",
                        (doc.start_line, doc.end_line)
                    ),
                )
            }
        }
    }
}
