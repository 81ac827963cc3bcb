//! Kernel packages on the wire: a scientist's own kernel (a `kernel.toml` manifest, a
//! `kernel.wgsl` compute shader and optionally a `view.wgsl` live view), named by the SHA-256
//! of its canonical bytes, and the concrete program the coordinator derives from it for one
//! unit's params ([`PackagePlan`]). The volunteer's client interprets that plan (data, not a
//! language: the manifest is parsed and its expressions evaluated on the coordinator, where the
//! code is cheap), so what a browser downloads for packages stays small.

use crate::Digest;
use serde::{Deserialize, Serialize};

/// A package's files. Its canonical bytes are this struct as JSON, fields in this order, no
/// insignificant white space ([`PackageFiles::canonical_bytes`]); its hash, the SHA-256 of
/// those bytes, is its name (`name@hash` in a batch). The coordinator serves exactly these
/// bytes at `GET /api/v1/kernels/{hash}`, so a client checks what it fetched by hashing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageFiles {
    #[serde(rename = "kernel.toml")]
    pub manifest: String,
    #[serde(rename = "kernel.wgsl")]
    pub wgsl: String,
    #[serde(rename = "view.wgsl", default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
}

impl PackageFiles {
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Strings only: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn hash(&self) -> Digest {
        Digest::of(&self.canonical_bytes())
    }

    /// The files from bytes fetched by `hash`: None unless they hash to it.
    pub fn from_canonical(bytes: &[u8], hash: &Digest) -> Option<Self> {
        if Digest::of(bytes) != *hash {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }
}

/// `name@hash`: how batches, units and receipts name a package's kernel. None for a built-in.
pub fn package_hash(kernel: &str) -> Option<Digest> {
    let (_, hash) = kernel.split_once('@')?;
    hash.parse().ok()
}

/// A package's unit, as a volunteer (or a verifier worker) gets it with its assignment: whose
/// code it is, and the concrete program for the unit's params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRun {
    /// The package's hash: `GET /api/v1/kernels/{hash}` serves its files.
    pub hash: Digest,
    pub name: String,
    pub author: String,
    /// The package is approved by this coordinator's operator (it is never dispatched
    /// otherwise).
    pub approved: bool,
    pub plan: PackagePlan,
}

/// The program of one unit of a package, every expression of its manifest evaluated for the
/// unit's params. Expressions that depend on the step are compiled to [`Code`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackagePlan {
    /// Entry points: name and `@workgroup_size` x.
    pub entries: Vec<(String, u32)>,
    pub buffers: Vec<PlanBuffer>,
    /// Dispatches run once before step 0 (not on resume).
    pub init: Vec<PlanDispatch>,
    /// Dispatches run at every step, in order, where their `when` holds.
    pub step: Vec<PlanDispatch>,
    pub total_steps: u64,
    pub checkpoint_every: u64,
    /// At most this many steps per segment (the runner also splits a segment's submissions by
    /// their measured time).
    pub chunk: u64,
    /// Indices (into `buffers`) of the state buffers the canonical output is made of, in order.
    pub output: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<PlanView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanBuffer {
    pub name: String,
    /// Bytes.
    pub len: u64,
    /// Part of the state (checkpoints, resume points, challenges); else scratch.
    pub state: bool,
    /// Initial words (small tables); None: zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDispatch {
    pub entry: u32,
    pub threads: u32,
    /// The per-dispatch words, each a program in `step` (at most 16).
    pub words: Vec<Code>,
    /// Runs at a step only where this is not 0 (None: always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Code>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    pub buffer: u32,
    pub words: Vec<u32>,
    pub vertices: u32,
    pub instances: u32,
}

/// A small program in one variable, the step: postfix operations on a stack of i64, with
/// wrapping arithmetic, so every client computes the same words. A constant is `[0, c]`.
pub type Code = Vec<i64>;

/// The operations of [`Code`] (operands follow only [`op::CONST`]).
pub mod op {
    pub const CONST: i64 = 0;
    pub const STEP: i64 = 1;
    pub const ADD: i64 = 2;
    pub const SUB: i64 = 3;
    pub const MUL: i64 = 4;
    /// Truncating; by zero: 0.
    pub const DIV: i64 = 5;
    /// Remainder of the truncating division; by zero: 0.
    pub const REM: i64 = 6;
    pub const MIN: i64 = 7;
    pub const MAX: i64 = 8;
    pub const LT: i64 = 9;
    pub const LE: i64 = 10;
    pub const EQ: i64 = 11;
    pub const NE: i64 = 12;
    pub const AND: i64 = 13;
    pub const OR: i64 = 14;
    pub const NOT: i64 = 15;
    pub const NEG: i64 = 16;
    /// `c a b` → `a` if c ≠ 0 else `b`.
    pub const SELECT: i64 = 17;
}

/// Runs `code` at `step`: the value left on top of the stack (0 for a malformed program: the
/// coordinator only sends programs it compiled).
pub fn eval(code: &[i64], step: u64) -> i64 {
    let mut stack: Vec<i64> = Vec::with_capacity(8);
    let mut i = 0;
    while i < code.len() {
        let o = code[i];
        i += 1;
        if o == op::CONST {
            stack.push(code.get(i).copied().unwrap_or(0));
            i += 1;
            continue;
        }
        if o == op::STEP {
            stack.push(step as i64);
            continue;
        }
        let b = stack.pop().unwrap_or(0);
        if o == op::NOT {
            stack.push(i64::from(b == 0));
            continue;
        }
        if o == op::NEG {
            stack.push(b.wrapping_neg());
            continue;
        }
        let a = stack.pop().unwrap_or(0);
        let v = match o {
            op::ADD => a.wrapping_add(b),
            op::SUB => a.wrapping_sub(b),
            op::MUL => a.wrapping_mul(b),
            op::DIV => a.checked_div(b).unwrap_or(0),
            op::REM => a.checked_rem(b).unwrap_or(0),
            op::MIN => a.min(b),
            op::MAX => a.max(b),
            op::LT => i64::from(a < b),
            op::LE => i64::from(a <= b),
            op::EQ => i64::from(a == b),
            op::NE => i64::from(a != b),
            op::AND => i64::from(a != 0 && b != 0),
            op::OR => i64::from(a != 0 || b != 0),
            op::SELECT => {
                let c = stack.pop().unwrap_or(0);
                if c != 0 { a } else { b }
            }
            _ => 0,
        };
        stack.push(v);
    }
    stack.pop().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_are_fixed_and_hash_is_checked() {
        let f = PackageFiles {
            manifest: "name = \"x\"\n".into(),
            wgsl: "fn f() {}".into(),
            view: None,
        };
        assert_eq!(
            String::from_utf8(f.canonical_bytes()).unwrap(),
            r#"{"kernel.toml":"name = \"x\"\n","kernel.wgsl":"fn f() {}"}"#
        );
        let bytes = f.canonical_bytes();
        assert_eq!(
            PackageFiles::from_canonical(&bytes, &f.hash()),
            Some(f.clone())
        );
        let mut tampered = bytes.clone();
        tampered[20] ^= 1;
        assert_eq!(PackageFiles::from_canonical(&tampered, &f.hash()), None);
        let kernel = format!("x@{}", f.hash());
        assert_eq!(package_hash(&kernel), Some(f.hash()));
        assert_eq!(package_hash("ising2d"), None);
        assert_eq!(package_hash("x@nothex"), None);
    }

    #[test]
    fn code_evaluates_with_wrapping_and_defined_division() {
        use op::*;
        // (step + 1 - 3) / 2 - 1
        let slot = [
            STEP, CONST, 1, ADD, CONST, 3, SUB, CONST, 2, DIV, CONST, 1, SUB,
        ];
        assert_eq!(eval(&slot, 4), 0);
        assert_eq!(eval(&slot, 6), 1);
        assert_eq!(eval(&[CONST, 7, CONST, 0, DIV], 0), 0);
        assert_eq!(eval(&[CONST, 7, CONST, 0, REM], 0), 0);
        assert_eq!(eval(&[CONST, i64::MAX, CONST, 1, ADD], 0), i64::MIN);
        assert_eq!(eval(&[CONST, 1, CONST, 5, CONST, 6, SELECT], 0), 5);
        assert_eq!(eval(&[CONST, 0, CONST, 5, CONST, 6, SELECT], 0), 6);
        assert_eq!(eval(&[STEP, CONST, 3, LT, NOT], 2), 0);
        assert_eq!(eval(&[], 0), 0);
        // Malformed programs do not panic.
        assert_eq!(eval(&[ADD, ADD, CONST], 0), 0);
    }
}
