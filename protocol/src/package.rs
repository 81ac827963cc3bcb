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
        // As a JSON value (the reader the browser's client has already).
        let v: serde_json::Value = serde_json::from_str(std::str::from_utf8(bytes).ok()?).ok()?;
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        Some(Self {
            manifest: text("kernel.toml")?,
            wgsl: text("kernel.wgsl")?,
            view: text("view.wgsl"),
        })
    }
}

/// `name@hash`: how batches, units and receipts name a package's kernel. None for a built-in.
pub fn package_hash(kernel: &str) -> Option<Digest> {
    let (_, hash) = kernel.split_once('@')?;
    hash.parse().ok()
}

/// A package's unit, as a volunteer (or a verifier worker) gets it with its assignment: whose
/// code it is, and the concrete program for the unit's params. Read through a JSON value (the
/// browser's client has that reader already; a derived one would add its own).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageRun {
    /// The package's hash: `GET /api/v1/kernels/{hash}` serves its files.
    pub hash: Digest,
    pub name: String,
    pub author: String,
    /// The package is approved by this coordinator's operator (it is never dispatched
    /// otherwise).
    pub approved: bool,
    /// The plan, as it travels ([`PackagePlan::try_from`] reads it).
    pub plan: PlanWire,
}

/// The program of one unit of a package, every expression of its manifest evaluated for the
/// unit's params. Expressions that depend on the step are compiled to [`Code`]. On the wire it
/// is two flat lists, its names and its numbers ([`PlanWire`]): the browser's client decodes
/// them with a few lines instead of a parser per struct (its download budget).
#[derive(Debug, Clone, PartialEq)]
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
    pub view: Option<PlanView>,
}

/// [`PackagePlan`] on the wire: the entry points' and buffers' names, then every number in
/// the order [`PackagePlan`] declares them (lists and options prefixed by their length).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanWire {
    pub names: Vec<String>,
    pub numbers: Vec<i64>,
}

impl PackageRun {
    fn from_value(v: &serde_json::Value) -> Option<Self> {
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        let list = |k: &str| v["plan"][k].as_array();
        Some(Self {
            hash: v["hash"].as_str()?.parse().ok()?,
            name: text("name")?,
            author: text("author")?,
            approved: v["approved"].as_bool()?,
            plan: PlanWire {
                names: list("names")?
                    .iter()
                    .map(|n| n.as_str().map(str::to_owned))
                    .collect::<Option<_>>()?,
                numbers: list("numbers")?
                    .iter()
                    .map(serde_json::Value::as_i64)
                    .collect::<Option<_>>()?,
            },
        })
    }
}

impl<'de> Deserialize<'de> for PackageRun {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Self::from_value(&v).ok_or_else(|| {
            serde::de::Error::custom("a package run: hash, name, author, approved, plan")
        })
    }
}

/// The wire version of [`PlanWire`]'s layout.
const WIRE_VERSION: i64 = 1;

impl From<PackagePlan> for PlanWire {
    fn from(p: PackagePlan) -> Self {
        let mut n = vec![WIRE_VERSION, p.entries.len() as i64];
        let mut names = Vec::new();
        for (name, size) in &p.entries {
            names.push(name.clone());
            n.push(i64::from(*size));
        }
        n.push(p.buffers.len() as i64);
        for b in &p.buffers {
            names.push(b.name.clone());
            n.extend([b.len as i64, i64::from(b.state)]);
            match &b.words {
                None => n.push(-1),
                Some(w) => {
                    n.push(w.len() as i64);
                    n.extend(w.iter().map(|&x| i64::from(x)));
                }
            }
        }
        for list in [&p.init, &p.step] {
            n.push(list.len() as i64);
            for d in list {
                n.extend([
                    i64::from(d.entry),
                    i64::from(d.threads),
                    d.words.len() as i64,
                ]);
                for code in d.words.iter().chain(&d.when) {
                    n.push(code.len() as i64);
                    n.extend(code);
                }
                if d.when.is_none() {
                    n.push(-1);
                }
            }
        }
        n.extend([
            p.total_steps as i64,
            p.checkpoint_every as i64,
            p.chunk as i64,
        ]);
        n.push(p.output.len() as i64);
        n.extend(p.output.iter().map(|&b| i64::from(b)));
        match &p.view {
            None => n.push(-1),
            Some(v) => {
                n.extend([i64::from(v.buffer), v.words.len() as i64]);
                n.extend(v.words.iter().map(|&w| i64::from(w)));
                n.extend([i64::from(v.vertices), i64::from(v.instances)]);
            }
        }
        PlanWire { names, numbers: n }
    }
}

/// Reads [`PlanWire`]'s numbers in order; past the end, or where a number does not fit, it
/// notes the plan as malformed (and reads 0), so decoding is a straight walk.
struct Cursor {
    n: std::vec::IntoIter<i64>,
    bad: bool,
}

impl Cursor {
    fn next(&mut self) -> i64 {
        self.n.next().unwrap_or_else(|| {
            self.bad = true;
            0
        })
    }
    /// A count, an index or a word (0..=u32::MAX); -1 reads as None.
    fn opt(&mut self) -> Option<u32> {
        match self.next() {
            -1 => None,
            x => Some(u32::try_from(x).unwrap_or_else(|_| {
                self.bad = true;
                0
            })),
        }
    }
    fn word(&mut self) -> u32 {
        let w = self.opt();
        self.bad |= w.is_none();
        w.unwrap_or(0)
    }
    /// A length or count (≥ 0).
    fn len(&mut self) -> u64 {
        let x = self.next();
        self.bad |= x < 0;
        x.max(0) as u64
    }
    fn words(&mut self, k: u32) -> Vec<u32> {
        (0..k.min(1 << 24)).map(|_| self.word()).collect()
    }
    fn code(&mut self) -> Option<Code> {
        let k = self.opt()?;
        Some((0..k.min(1 << 24)).map(|_| self.next()).collect())
    }
}

impl TryFrom<PlanWire> for PackagePlan {
    type Error = String;
    fn try_from(w: PlanWire) -> Result<Self, String> {
        let mut names = w.names.into_iter();
        let mut c = Cursor {
            n: w.numbers.into_iter(),
            bad: false,
        };
        if c.next() != WIRE_VERSION {
            return Err("package plan: another wire version".into());
        }
        let mut name = || names.next().unwrap_or_default();
        let k = c.word();
        let entries = (0..k.min(64)).map(|_| (name(), c.word())).collect();
        let k = c.word();
        let buffers = (0..k.min(64))
            .map(|_| PlanBuffer {
                name: name(),
                len: c.len(),
                state: c.next() != 0,
                words: c.opt().map(|k| c.words(k)),
            })
            .collect();
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let k = c.word();
            for _ in 0..k.min(4096) {
                let (entry, threads, k) = (c.word(), c.word(), c.word());
                let words = (0..k.min(64))
                    .map(|_| c.code().unwrap_or_default())
                    .collect();
                list.push(PlanDispatch {
                    entry,
                    threads,
                    words,
                    when: c.code(),
                });
            }
        }
        let [init, step] = lists;
        let (total_steps, checkpoint_every, chunk) = (c.len(), c.len(), c.len());
        let k = c.word();
        let output = c.words(k);
        let view = c.opt().map(|buffer| {
            let k = c.word();
            PlanView {
                buffer,
                words: c.words(k),
                vertices: c.word(),
                instances: c.word(),
            }
        });
        if c.bad || c.n.next().is_some() || total_steps < 1 || checkpoint_every < 1 || chunk < 1 {
            return Err("package plan: malformed".into());
        }
        Ok(PackagePlan {
            entries,
            buffers,
            init,
            step,
            total_steps,
            checkpoint_every,
            chunk,
            output,
            view,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanBuffer {
    pub name: String,
    /// Bytes.
    pub len: u64,
    /// Part of the state (checkpoints, resume points, challenges); else scratch.
    pub state: bool,
    /// Initial words (small tables); None: zeros.
    pub words: Option<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanDispatch {
    pub entry: u32,
    pub threads: u32,
    /// The per-dispatch words, each a program in `step` (at most 16).
    pub words: Vec<Code>,
    /// Runs at a step only where this is not 0 (None: always).
    pub when: Option<Code>,
}

#[derive(Debug, Clone, PartialEq)]
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
    fn runs_are_read_back() {
        let run = PackageRun {
            hash: Digest::of(b"x"),
            name: "p".into(),
            author: "a".into(),
            approved: true,
            plan: PlanWire {
                names: vec!["e".into()],
                numbers: vec![1, -1, i64::MAX],
            },
        };
        let back: PackageRun = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
        assert_eq!(back, run);
        assert!(serde_json::from_str::<PackageRun>(r#"{"hash":"00"}"#).is_err());
    }

    #[test]
    fn plans_cross_the_wire_unchanged() {
        let d = |entry, when: Option<Code>| PlanDispatch {
            entry,
            threads: 1000,
            words: vec![vec![op::CONST, 7], vec![op::STEP], vec![]],
            when,
        };
        let plan = PackagePlan {
            entries: vec![("a".into(), 64), ("b".into(), 256)],
            buffers: vec![
                PlanBuffer {
                    name: "x".into(),
                    len: 4096,
                    state: true,
                    words: None,
                },
                PlanBuffer {
                    name: "t".into(),
                    len: 8,
                    state: false,
                    words: Some(vec![1, u32::MAX]),
                },
            ],
            init: vec![d(0, None)],
            step: vec![
                d(1, Some(vec![op::STEP, op::CONST, 2, op::REM])),
                d(0, None),
            ],
            total_steps: 1 << 40,
            checkpoint_every: 3,
            chunk: 64,
            output: vec![0],
            view: Some(PlanView {
                buffer: 0,
                words: vec![5, 6],
                vertices: 3,
                instances: 1,
            }),
        };
        let run = PackageRun {
            hash: Digest::of(b""),
            name: "n".into(),
            author: "a".into(),
            approved: true,
            plan: plan.clone().into(),
        };
        let json = serde_json::to_string(&run).unwrap();
        let back: PackageRun = serde_json::from_str(&json).unwrap();
        assert_eq!(PackagePlan::try_from(back.plan).unwrap(), plan);
        let no_view = PackagePlan { view: None, ..plan };
        let back = PackagePlan::try_from(PlanWire::from(no_view.clone())).unwrap();
        assert_eq!(back, no_view);
        // Cut short or tampered, it is refused rather than misread.
        let mut w: PlanWire = no_view.into();
        w.numbers.pop();
        assert!(PackagePlan::try_from(w.clone()).is_err());
        w.numbers[0] = 9;
        assert!(PackagePlan::try_from(w).is_err());
    }

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
