//! `cpu`: CPU-bound work of a chosen shape, for measuring what epoch interruption costs.
//!
//! Payload: `{"kind": "arith" | "btree" | "interp", "n": u64}`.
//!
//! - `arith`: `n` rounds of xorshift64 folded into an FNV-1a hash (a tight integer loop).
//! - `btree`: `n` steps, each inserting one pseudo-random key into a `BTreeMap` and removing
//!   another, keys drawn from 0..4096 so memory stays bounded (allocation and pointer chasing).
//! - `interp`: `n` instructions of a small register-machine bytecode loop (branchy dispatch).
//!
//! Output: `{"kind": <kind>, "n": n, "result": <u64>}`; `result` depends on every step, so none
//! of the work can be optimised away.

use std::collections::BTreeMap;
use std::hint::black_box;

use serde::{Deserialize, Serialize};
use spool_sdk::{Job, JobError};

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Arith,
    Btree,
    Interp,
}

#[derive(Deserialize)]
struct Work {
    kind: Kind,
    n: u64,
}

#[derive(Serialize)]
struct Done {
    kind: Kind,
    n: u64,
    result: u64,
}

fn run(_: &Job, work: Work) -> Result<Done, JobError> {
    let n = black_box(work.n);
    let result = match work.kind {
        Kind::Arith => arith(n),
        Kind::Btree => btree(n),
        Kind::Interp => interp(n),
    };
    Ok(Done {
        kind: work.kind,
        n: work.n,
        result,
    })
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn arith(n: u64) -> u64 {
    let (mut hash, mut x) = (0xcbf2_9ce4_8422_2325_u64, 0x9e37_79b9_7f4a_7c15_u64);
    for _ in 0..n {
        x = xorshift(x);
        hash = (hash ^ (x & 0xff)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn btree(n: u64) -> u64 {
    const KEYS: u64 = 4096;
    let mut map = BTreeMap::new();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut sum = 0_u64;
    for step in 0..n {
        x = xorshift(x);
        map.insert(x % KEYS, step);
        x = xorshift(x);
        if let Some(value) = map.remove(&(x % KEYS)) {
            sum = sum.wrapping_add(value);
        }
    }
    sum.wrapping_add(map.len() as u64)
}

/// One instruction of the interpreter: four registers, wrapping arithmetic, one jump.
#[derive(Clone, Copy)]
enum Op {
    AddImm(usize, u64),
    Add(usize, usize),
    Xor(usize, usize),
    Mul(usize, usize),
    ShrImm(usize, u32),
    /// Jump to the target when the register is odd.
    JumpIfOdd(usize, usize),
    Jump(usize),
}

fn interp(n: u64) -> u64 {
    // `black_box` hides the program from the optimiser, so the dispatch loop stays a real
    // dispatch loop instead of being specialised for this one program.
    let program = black_box([
        Op::AddImm(0, 0x9e37_79b9),
        Op::Mul(1, 0),
        Op::ShrImm(1, 7),
        Op::Xor(2, 1),
        Op::JumpIfOdd(2, 6),
        Op::Add(3, 2),
        Op::AddImm(3, 1),
        Op::Jump(0),
    ]);
    let mut regs = [1_u64, 3, 5, 7];
    let mut pc = 0;
    for _ in 0..n {
        pc = match program[pc % program.len()] {
            Op::AddImm(r, imm) => {
                regs[r] = regs[r].wrapping_add(imm);
                pc + 1
            }
            Op::Add(r, s) => {
                regs[r] = regs[r].wrapping_add(regs[s]);
                pc + 1
            }
            Op::Xor(r, s) => {
                regs[r] ^= regs[s];
                pc + 1
            }
            Op::Mul(r, s) => {
                regs[r] = regs[r].wrapping_mul(regs[s] | 1);
                pc + 1
            }
            Op::ShrImm(r, bits) => {
                regs[r] ^= regs[r] >> bits;
                pc + 1
            }
            Op::JumpIfOdd(r, target) if regs[r] & 1 == 1 => target,
            Op::JumpIfOdd(..) => pc + 1,
            Op::Jump(target) => target,
        };
    }
    regs.iter()
        .fold(0, |acc, r| acc.wrapping_mul(31).wrapping_add(*r))
}

spool_sdk::export!(run);
