//! BuildKit's shell-lexer tables (`shell/envVarTest`, `shell/wordsTest`), read exactly as
//! described in the conformance README (sections 2 and 3).

use std::path::Path;

use kiln_executor::dockerfile::shell::Lexer;

use crate::CaseResult;

pub fn run(dir: &Path) -> Vec<CaseResult> {
    let mut out = Vec::new();
    match std::fs::read_to_string(dir.join("envVarTest")) {
        Ok(text) => out.extend(env_var_cases(&text)),
        Err(e) => out.push(CaseResult::fail("envVarTest", format!("unreadable: {e}"))),
    }
    match std::fs::read_to_string(dir.join("wordsTest")) {
        Ok(text) => out.extend(words_cases(&text)),
        Err(e) => out.push(CaseResult::fail("wordsTest", format!("unreadable: {e}"))),
    }
    out
}

/// `PLATFORM|INPUT|EXPECTED`, single-word expansion in a fixed environment; A and U rows.
fn env_var_cases(text: &str) -> Vec<CaseResult> {
    let env: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lexer = Lexer::new('\\');
    let mut out = Vec::new();
    for (n, raw) in text.split('\n').enumerate() {
        let name = format!("envVarTest:{}", n + 1);
        if raw.starts_with('#') {
            continue;
        }
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [platform, input, expected] = fields.as_slice() else {
            out.push(CaseResult::fail(name, format!("malformed line {line:?}")));
            continue;
        };
        if !matches!(*platform, "A" | "U") {
            continue;
        }
        let got = lexer.process_word(input, &env);
        out.push(judge(
            name,
            input,
            *expected == "error",
            &[expected.to_string()],
            got.map(|s| vec![s]),
        ));
    }
    out
}

/// `INPUT|EXPECTED` with `ENV k=v` lines building up the environment; word splitting.
fn words_cases(text: &str) -> Vec<CaseResult> {
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let name = format!("wordsTest:{}", n + 1);
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start();
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        let [input, expected] = parts.as_slice() else {
            out.push(CaseResult::fail(name, format!("malformed line {line:?}")));
            continue;
        };
        let input = input.trim();
        let expected = expected.trim_start();
        let words: Vec<String> = expected.split(',').map(str::to_string).collect();
        let got = lexer.process_words(input, &env);
        out.push(judge(name, input, expected == "error", &words, got));
    }
    out
}

fn judge(
    name: String,
    input: &str,
    want_error: bool,
    expected: &[String],
    got: Result<Vec<String>, kiln_executor::dockerfile::shell::ShellError>,
) -> CaseResult {
    match (want_error, got) {
        (true, Err(_)) => CaseResult::pass(name),
        (true, Ok(g)) => CaseResult::fail(name, format!("{input:?}: expected an error, got {g:?}")),
        (false, Err(e)) => CaseResult::fail(name, format!("{input:?}: unexpected error {e}")),
        (false, Ok(g)) if g == expected => CaseResult::pass(name),
        (false, Ok(g)) => {
            CaseResult::fail(name, format!("{input:?}: expected {expected:?}, got {g:?}"))
        }
    }
}
