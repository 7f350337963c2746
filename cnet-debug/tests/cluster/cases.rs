//! Trace cases for the fault tests: the real binary, JSON and human, with
//! and without capture; the human verdict, the JSON verdict and the exit
//! code must agree.

use std::process::Command;
use std::time::Instant;

use serde_json::Value;

/// One run of the binary: exit code, the JSON lines (or human text).
pub struct Run {
    pub code: i32,
    pub out: String,
    pub ms: u128,
}

pub fn cnet_debug(args: &[&str]) -> Run {
    let t0 = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_cnet-debug"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        ms: t0.elapsed().as_millis(),
    }
}

pub fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// What one case found, with and without capture.
#[derive(Debug)]
pub struct Case {
    /// Exit code without capture, with capture.
    pub codes: (i32, i32),
    /// Error and warning codes (without capture), (with capture).
    pub findings: (Vec<String>, Vec<String>),
    /// The namespace of each finding's hop, by code (with capture).
    pub hop_ns: Vec<(String, String)>,
    /// JSON verdict with capture.
    pub verdict: Value,
}

/// Trace `dst` from `from`: JSON and human, without and with capture; the
/// human verdict line, the JSON verdict and the exit code must agree.
pub fn case(name: &str, from: &str, dst: &str) -> Case {
    case_with(name, from, dst, &|| {})
}

/// [`case`], with `prep` run before each of the four traces (a probe may
/// change what the next trace sees: a stale neighbour is resolved again).
pub fn case_with(name: &str, from: &str, dst: &str, prep: &dyn Fn()) -> Case {
    let mut codes = Vec::new();
    let mut findings = Vec::new();
    let mut verdict = Value::Null;
    let mut hop_ns = Vec::new();
    for capture in ["--no-capture", "--capture"] {
        prep();
        let j = cnet_debug(&[
            "trace",
            dst,
            "--from",
            from,
            capture,
            "--timeout",
            "400",
            "--json",
        ]);
        prep();
        let h = cnet_debug(&["trace", dst, "--from", from, capture, "--timeout", "400"]);
        eprintln!(
            "case {name} {capture}: exit {} in {} ms\n{}",
            h.code, h.ms, h.out
        );
        let ls = lines(&j.out);
        let v = ls
            .iter()
            .find(|l| l["type"] == "verdict")
            .unwrap_or_else(|| panic!("no verdict: {}", j.out))["data"]
            .clone();
        let ok = v["ok"].as_bool().unwrap();
        assert_eq!(
            j.code,
            if ok { 0 } else { 1 },
            "{name}: JSON verdict vs exit code\n{}",
            j.out
        );
        assert_eq!(h.code, j.code, "{name}: human vs JSON exit code\n{}", h.out);
        let line = h
            .out
            .lines()
            .find(|l| l.starts_with("verdict: "))
            .unwrap_or_else(|| panic!("no verdict line: {}", h.out));
        assert_eq!(
            line.starts_with("verdict: OK"),
            ok,
            "{name}: human verdict vs JSON verdict\n{}\n{}",
            h.out,
            j.out
        );
        assert!(!h.out.contains("Some("), "Rust debug text in:\n{}", h.out);
        let hops: Vec<&Value> = ls.iter().filter(|l| l["type"] == "hop").collect();
        let f: Vec<String> = ls
            .iter()
            .filter(|l| l["type"] == "finding")
            .map(|l| l["data"]["code"].as_str().unwrap().to_string())
            .collect();
        if capture == "--capture" {
            hop_ns = ls
                .iter()
                .filter(|l| l["type"] == "finding")
                .map(|l| {
                    let n = l["data"]["hop"].as_u64().unwrap() as usize;
                    (
                        l["data"]["code"].as_str().unwrap().to_string(),
                        hops[n - 1]["data"]["netns"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            verdict = v;
        }
        codes.push(j.code);
        findings.push(f);
    }
    Case {
        codes: (codes[0], codes[1]),
        findings: (findings[0].clone(), findings[1].clone()),
        hop_ns,
        verdict,
    }
}
