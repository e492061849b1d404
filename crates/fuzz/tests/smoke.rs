//! A short fuzz run on stable, part of `cargo test`: every target gets its seed corpus
//! (`fuzz/seeds/<target>/`), then random mutations of it for a fraction of a second. The long
//! runs are `cargo fuzz` (see `docs/fuzzing.md`); `MCPTAP_FUZZ_MS=60000 cargo test --release -p
//! mcptap-fuzz` runs this harness longer without nightly. A failing input is written to
//! `target/fuzz-smoke-failure-<target>` for `cargo fuzz run <target> <file>`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.into_iter().map(|(_, b)| b).collect()
}

/// xorshift64*: deterministic, so a failure reproduces with the same budget.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that parsers treat specially.
const INTERESTING: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"\\u0000",
    b"\n",
    b"\r\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"&",
    b"%",
    b"%2",
    b"%zz",
    b"+",
    b"@",
    b"/",
    b"..",
    b"?",
    b"#",
    b"\xff",
    b"\xc3",
    b"0",
    b"-1",
    b"1e999",
    b"null",
    b"true",
    b"Bearer ",
    b"data: ",
    b"\x1f\x8b",
    b"gzip",
    b"br",
    b"zstd",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => input.truncate(rng.below(len)),
            2 => {
                let at = rng.below(len + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                input.splice(at..at, piece.iter().copied());
            }
            3 if len > 1 => {
                let from = rng.below(len);
                let to = (from + rng.below(64)).min(len);
                input.drain(from..to);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let to = (from + rng.below(256)).min(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[from..to].iter().copied());
                }
            }
            5 if len > 1 => {
                let from = rng.below(len);
                let to = (from + rng.below(32)).min(len);
                let chunk = input[from..to].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            _ => {
                let at = rng.below(len + 1);
                input.insert(at, rng.next() as u8);
            }
        }
    }
}

/// Runs `target` on `input` on a thread of its own: a panic or an input that takes longer than
/// a few seconds (a hang, or quadratic work) is a failure.
fn run_one(target: mcptap_fuzz::Target, input: &[u8]) -> Result<(), &'static str> {
    let (tx, rx) = std::sync::mpsc::channel();
    let input = input.to_vec();
    std::thread::spawn(move || {
        let ok = std::panic::catch_unwind(|| target(&input)).is_ok();
        let _ = tx.send(ok);
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(true) => Ok(()),
        Ok(false) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err("panicked"),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err("took more than 5 s"),
    }
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let budget = std::env::var("MCPTAP_FUZZ_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_millis(300), Duration::from_millis);
    for &(name, target) in mcptap_fuzz::TARGETS {
        let seeds = corpus(name);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let started = Instant::now();
        let mut runs = 0u64;
        let mut i = 0;
        while i < seeds.len() || started.elapsed() < budget {
            let mut input = seeds[i % seeds.len()].clone();
            if i >= seeds.len() {
                mutate(&mut rng, &seeds, &mut input);
            }
            i += 1;
            runs += 1;
            if let Err(why) = run_one(target, &input) {
                let out = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../target")
                    .join(format!("fuzz-smoke-failure-{name}"));
                let _ = std::fs::write(&out, &input);
                panic!("target {name} {why}; input saved in {}", out.display());
            }
        }
        eprintln!("fuzz smoke: {name}: {runs} inputs");
    }
}

#[test]
fn the_seed_corpora_reach_the_parsers() {
    // Seeds that fail to parse would leave the mutations nothing to explore.
    for seed in corpus("har") {
        let import = mcptap_store::har::read_har_bytes(&seed).expect("a HAR seed parses");
        assert!(!import.flows.is_empty());
    }
    for seed in corpus("journal") {
        let flows = mcptap_store::JournalReader::new(seed.as_slice())
            .filter_map(Result::ok)
            .count();
        assert!(flows > 0, "a journal seed holds flows");
    }
}
