//! The manifest's expressions: arithmetic over a unit's params (buffer lengths, thread counts,
//! per-dispatch words, the step count, the cost model), over the step (words and `when`
//! conditions, compiled to [`protocol::package::Code`] for the client), and over a unit's output
//! records (observables, in double precision, with `mean(…)` reductions).
//!
//! Syntax: numbers (`12`, `0x1f`, `0.5`, `1e-3`), `true`/`false`, names, `( )`, unary `-` and
//! `!`, binary `* / %`, `+ -`, `< <= > >= == !=`, `&&`, `||` (usual precedence), and calls:
//! `min max abs floor ceil round sqrt exp ln pow select threshold lo hi bits mean`.
//! Integers are 64-bit; `/` of two integers truncates. Any float operand makes the operation a
//! float one. Overflow and division by zero are errors while a unit's params are evaluated.

use protocol::package::{Code, op};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Int(i64),
    Float(f64),
    Var(String),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin(Bin, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    /// The `i`-th reduction of an observable (after [`Expr::extract_means`]).
    Reduced(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Min,
    Max,
    Abs,
    Floor,
    Ceil,
    Round,
    Sqrt,
    Exp,
    Ln,
    Pow,
    Select,
    /// `floor(p·2³²)` as a u32 acceptance threshold (the built-ins' `philox::threshold`).
    Threshold,
    /// The low / high 32 bits of an integer (a u64 seed's two key words).
    Lo,
    Hi,
    /// A number's f32 bit pattern (what a float word is anyway; explicit for clarity).
    Bits,
    /// The mean of its argument over a table's records (observables only).
    Mean,
}

impl Func {
    fn parse(name: &str) -> Option<(Self, usize)> {
        Some(match name {
            "min" => (Self::Min, 2),
            "max" => (Self::Max, 2),
            "abs" => (Self::Abs, 1),
            "floor" => (Self::Floor, 1),
            "ceil" => (Self::Ceil, 1),
            "round" => (Self::Round, 1),
            "sqrt" => (Self::Sqrt, 1),
            "exp" => (Self::Exp, 1),
            "ln" => (Self::Ln, 1),
            "pow" => (Self::Pow, 2),
            "select" => (Self::Select, 3),
            "threshold" => (Self::Threshold, 1),
            "lo" => (Self::Lo, 1),
            "hi" => (Self::Hi, 1),
            "bits" => (Self::Bits, 1),
            "mean" => (Self::Mean, 1),
            _ => return None,
        })
    }
}

/// A value: an integer or a double.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    I(i64),
    F(f64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }

    /// As a dispatch word: an integer's low 32 bits (two's complement), a float's f32 bits.
    pub fn word(self) -> u32 {
        match self {
            Num::I(i) => i as u32,
            Num::F(f) => (f as f32).to_bits(),
        }
    }

    fn truth(self) -> bool {
        match self {
            Num::I(i) => i != 0,
            Num::F(f) => f != 0.0,
        }
    }
}

/// What went wrong, in words for a scientist.
pub type Error = String;

// ---- Parsing ----

struct Parser<'a> {
    src: &'a [u8],
    at: usize,
}

pub fn parse(text: &str) -> Result<Expr, Error> {
    if text.len() > 4096 {
        return Err("an expression is at most 4096 characters".into());
    }
    let mut p = Parser {
        src: text.as_bytes(),
        at: 0,
    };
    let e = p.or(0)?;
    p.ws();
    if p.at < p.src.len() {
        return Err(format!(
            "unexpected `{}` at column {}",
            p.rest_char(),
            p.at + 1
        ));
    }
    Ok(e)
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.at < self.src.len() && self.src[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn rest_char(&self) -> char {
        std::str::from_utf8(&self.src[self.at..])
            .ok()
            .and_then(|s| s.chars().next())
            .unwrap_or('?')
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.src[self.at..].starts_with(tok.as_bytes()) {
            // `<` must not eat the start of `<=`, nor `=` of `==` etc.: callers try longer first.
            self.at += tok.len();
            true
        } else {
            false
        }
    }

    fn depth_check(depth: usize) -> Result<(), Error> {
        if depth > 64 {
            return Err("an expression nests at most 64 deep".into());
        }
        Ok(())
    }

    fn or(&mut self, d: usize) -> Result<Expr, Error> {
        Self::depth_check(d)?;
        let mut l = self.and(d + 1)?;
        while self.eat("||") {
            l = Expr::Bin(Bin::Or, Box::new(l), Box::new(self.and(d + 1)?));
        }
        Ok(l)
    }

    fn and(&mut self, d: usize) -> Result<Expr, Error> {
        let mut l = self.cmp(d)?;
        while self.eat("&&") {
            l = Expr::Bin(Bin::And, Box::new(l), Box::new(self.cmp(d)?));
        }
        Ok(l)
    }

    fn cmp(&mut self, d: usize) -> Result<Expr, Error> {
        let l = self.add(d)?;
        for (tok, op) in [
            ("<=", Bin::Le),
            (">=", Bin::Ge),
            ("==", Bin::Eq),
            ("!=", Bin::Ne),
            ("<", Bin::Lt),
            (">", Bin::Gt),
        ] {
            if self.eat(tok) {
                return Ok(Expr::Bin(op, Box::new(l), Box::new(self.add(d)?)));
            }
        }
        Ok(l)
    }

    fn add(&mut self, d: usize) -> Result<Expr, Error> {
        let mut l = self.mul(d)?;
        loop {
            if self.eat("+") {
                l = Expr::Bin(Bin::Add, Box::new(l), Box::new(self.mul(d)?));
            } else if self.eat("-") {
                l = Expr::Bin(Bin::Sub, Box::new(l), Box::new(self.mul(d)?));
            } else {
                return Ok(l);
            }
        }
    }

    fn mul(&mut self, d: usize) -> Result<Expr, Error> {
        let mut l = self.unary(d)?;
        loop {
            let op = if self.eat("*") {
                Bin::Mul
            } else if self.eat("/") {
                Bin::Div
            } else if self.eat("%") {
                Bin::Rem
            } else {
                return Ok(l);
            };
            l = Expr::Bin(op, Box::new(l), Box::new(self.unary(d)?));
        }
    }

    fn unary(&mut self, d: usize) -> Result<Expr, Error> {
        Self::depth_check(d)?;
        if self.eat("-") {
            return Ok(Expr::Neg(Box::new(self.unary(d + 1)?)));
        }
        self.ws();
        if self.src[self.at..].starts_with(b"!") && !self.src[self.at..].starts_with(b"!=") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.unary(d + 1)?)));
        }
        self.primary(d)
    }

    fn primary(&mut self, d: usize) -> Result<Expr, Error> {
        self.ws();
        let start = self.at;
        let Some(&c) = self.src.get(self.at) else {
            return Err("expression ends too early".into());
        };
        if c == b'(' {
            self.at += 1;
            let e = self.or(d + 1)?;
            if !self.eat(")") {
                return Err(format!("missing `)` at column {}", self.at + 1));
            }
            return Ok(e);
        }
        if c.is_ascii_digit() || c == b'.' {
            while self.at < self.src.len()
                && (self.src[self.at].is_ascii_alphanumeric()
                    || self.src[self.at] == b'.'
                    || ((self.src[self.at] == b'-' || self.src[self.at] == b'+')
                        && matches!(self.src[self.at - 1], b'e' | b'E')
                        && !self.src[start..].starts_with(b"0x")))
            {
                self.at += 1;
            }
            let text = std::str::from_utf8(&self.src[start..self.at]).unwrap_or("");
            return number(text);
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while self.at < self.src.len()
                && (self.src[self.at].is_ascii_alphanumeric() || self.src[self.at] == b'_')
            {
                self.at += 1;
            }
            let name = std::str::from_utf8(&self.src[start..self.at]).unwrap_or("");
            match name {
                "true" => return Ok(Expr::Int(1)),
                "false" => return Ok(Expr::Int(0)),
                _ => {}
            }
            if self.eat("(") {
                let Some((f, arity)) = Func::parse(name) else {
                    return Err(format!("unknown function `{name}`"));
                };
                let mut args = Vec::new();
                if !self.eat(")") {
                    loop {
                        args.push(self.or(d + 1)?);
                        if self.eat(")") {
                            break;
                        }
                        if !self.eat(",") {
                            return Err(format!("expected `,` or `)` at column {}", self.at + 1));
                        }
                    }
                }
                if args.len() != arity {
                    return Err(format!(
                        "`{name}` takes {arity} argument(s), got {}",
                        args.len()
                    ));
                }
                return Ok(Expr::Call(f, args));
            }
            return Ok(Expr::Var(name.to_owned()));
        }
        Err(format!(
            "unexpected `{}` at column {}",
            self.rest_char(),
            self.at + 1
        ))
    }
}

fn number(text: &str) -> Result<Expr, Error> {
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16)
            .map(Expr::Int)
            .map_err(|_| format!("`{text}` is not a number"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Expr::Int)
            .map_err(|_| format!("`{text}` is too large"));
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Expr::Float(f)),
        _ => Err(format!("`{text}` is not a number")),
    }
}

// ---- Analysis ----

impl Expr {
    fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Neg(a) | Expr::Not(a) => vec![a],
            Expr::Bin(_, a, b) => vec![a, b],
            Expr::Call(_, args) => args.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Every variable named.
    pub fn vars(&self, out: &mut Vec<String>) {
        if let Expr::Var(v) = self
            && !out.contains(v)
        {
            out.push(v.clone());
        }
        for c in self.children() {
            c.vars(out);
        }
    }

    pub fn uses(&self, name: &str) -> bool {
        let mut v = Vec::new();
        self.vars(&mut v);
        v.iter().any(|x| x == name)
    }

    pub fn has_mean(&self) -> bool {
        matches!(self, Expr::Call(Func::Mean, _)) || self.children().iter().any(|c| c.has_mean())
    }

    /// Replaces every `mean(e)` with `Reduced(i)`, pushing `e` to `out` (observables).
    pub fn extract_means(self, out: &mut Vec<Expr>) -> Result<Expr, Error> {
        Ok(match self {
            Expr::Call(Func::Mean, mut args) => {
                let inner = args.pop().unwrap_or(Expr::Int(0));
                if inner.has_mean() {
                    return Err("`mean` cannot be nested".into());
                }
                out.push(inner);
                Expr::Reduced(out.len() - 1)
            }
            Expr::Neg(a) => Expr::Neg(Box::new(a.extract_means(out)?)),
            Expr::Not(a) => Expr::Not(Box::new(a.extract_means(out)?)),
            Expr::Bin(op, a, b) => Expr::Bin(
                op,
                Box::new(a.extract_means(out)?),
                Box::new(b.extract_means(out)?),
            ),
            Expr::Call(f, args) => Expr::Call(
                f,
                args.into_iter()
                    .map(|a| a.extract_means(out))
                    .collect::<Result<_, _>>()?,
            ),
            other => other,
        })
    }
}

// ---- Evaluation ----

/// Looks a record's field up by name.
pub type Fields<'a> = &'a dyn Fn(&str) -> Option<f64>;

/// Names and their values; `floats`: every value and operation in double precision
/// (observables), else integers stay integers.
pub struct Env<'a> {
    pub vars: &'a BTreeMap<String, Num>,
    /// Per-record fields, looked up before `vars` (inside `mean`).
    pub fields: Option<Fields<'a>>,
    /// Reductions' values (observables).
    pub reduced: &'a [f64],
    pub floats: bool,
}

impl<'a> Env<'a> {
    pub fn new(vars: &'a BTreeMap<String, Num>) -> Self {
        Self {
            vars,
            fields: None,
            reduced: &[],
            floats: false,
        }
    }
}

pub fn eval(e: &Expr, env: &Env) -> Result<Num, Error> {
    let v = match e {
        Expr::Int(i) => Num::I(*i),
        Expr::Float(f) => Num::F(*f),
        Expr::Reduced(i) => Num::F(env.reduced.get(*i).copied().unwrap_or(f64::NAN)),
        Expr::Var(name) => {
            if let Some(v) = env.fields.and_then(|f| f(name)) {
                Num::F(v)
            } else if let Some(v) = env.vars.get(name) {
                *v
            } else if name == "step" {
                return Err("`step` is known only in a step's words and `when`".into());
            } else {
                return Err(format!("unknown name `{name}`"));
            }
        }
        Expr::Neg(a) => match eval(a, env)? {
            Num::I(i) => Num::I(i.checked_neg().ok_or("integer overflow")?),
            Num::F(f) => Num::F(-f),
        },
        Expr::Not(a) => Num::I(i64::from(!eval(a, env)?.truth())),
        Expr::Bin(op, a, b) => {
            let (x, y) = (eval(a, env)?, eval(b, env)?);
            binary(*op, x, y)?
        }
        Expr::Call(f, args) => {
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push(eval(a, env)?);
            }
            call(*f, &vals)?
        }
    };
    Ok(match (env.floats, v) {
        (true, Num::I(i)) => Num::F(i as f64),
        (_, v) => v,
    })
}

fn binary(op: Bin, x: Num, y: Num) -> Result<Num, Error> {
    use Bin::*;
    let overflow = || "integer overflow".to_string();
    Ok(match (x, y) {
        (Num::I(a), Num::I(b)) => Num::I(match op {
            Add => a.checked_add(b).ok_or_else(overflow)?,
            Sub => a.checked_sub(b).ok_or_else(overflow)?,
            Mul => a.checked_mul(b).ok_or_else(overflow)?,
            Div => a.checked_div(b).ok_or("division by zero")?,
            Rem => a.checked_rem(b).ok_or("division by zero")?,
            Lt => i64::from(a < b),
            Le => i64::from(a <= b),
            Gt => i64::from(a > b),
            Ge => i64::from(a >= b),
            Eq => i64::from(a == b),
            Ne => i64::from(a != b),
            And => i64::from(a != 0 && b != 0),
            Or => i64::from(a != 0 || b != 0),
        }),
        (x, y) => {
            let (a, b) = (x.as_f64(), y.as_f64());
            match op {
                Add => Num::F(a + b),
                Sub => Num::F(a - b),
                Mul => Num::F(a * b),
                Div => Num::F(a / b),
                Rem => Num::F(a % b),
                Lt => Num::I(i64::from(a < b)),
                Le => Num::I(i64::from(a <= b)),
                Gt => Num::I(i64::from(a > b)),
                Ge => Num::I(i64::from(a >= b)),
                Eq => Num::I(i64::from(a == b)),
                Ne => Num::I(i64::from(a != b)),
                And => Num::I(i64::from(a != 0.0 && b != 0.0)),
                Or => Num::I(i64::from(a != 0.0 || b != 0.0)),
            }
        }
    })
}

fn call(f: Func, v: &[Num]) -> Result<Num, Error> {
    let x = v.first().copied().unwrap_or(Num::I(0));
    let fl = |g: fn(f64) -> f64| Num::F(g(x.as_f64()));
    let to_int = |g: fn(f64) -> f64| -> Result<Num, Error> {
        match x {
            Num::I(i) => Ok(Num::I(i)),
            Num::F(f) => {
                let r = g(f);
                if r.is_finite() && r.abs() < 9.0e18 {
                    Ok(Num::I(r as i64))
                } else {
                    Err(format!("{f} has no integer value"))
                }
            }
        }
    };
    Ok(match f {
        Func::Min | Func::Max => match (v[0], v[1]) {
            (Num::I(a), Num::I(b)) => Num::I(if f == Func::Min { a.min(b) } else { a.max(b) }),
            (a, b) => {
                let (a, b) = (a.as_f64(), b.as_f64());
                Num::F(if f == Func::Min { a.min(b) } else { a.max(b) })
            }
        },
        Func::Abs => match x {
            Num::I(i) => Num::I(i.checked_abs().ok_or("integer overflow")?),
            Num::F(f) => Num::F(f.abs()),
        },
        Func::Floor => to_int(f64::floor)?,
        Func::Ceil => to_int(f64::ceil)?,
        Func::Round => to_int(f64::round)?,
        Func::Sqrt => fl(f64::sqrt),
        Func::Exp => fl(f64::exp),
        Func::Ln => fl(f64::ln),
        Func::Pow => Num::F(x.as_f64().powf(v[1].as_f64())),
        Func::Select => {
            if x.truth() {
                v[1]
            } else {
                v[2]
            }
        }
        Func::Threshold => Num::I(i64::from(crate::philox::threshold(x.as_f64()))),
        Func::Lo | Func::Hi => match x {
            Num::I(i) => {
                let u = i as u64;
                Num::I(if f == Func::Lo {
                    u as u32
                } else {
                    (u >> 32) as u32
                } as i64)
            }
            Num::F(_) => return Err("`lo` and `hi` take an integer".into()),
        },
        Func::Bits => Num::I(i64::from((x.as_f64() as f32).to_bits())),
        Func::Mean => return Err("`mean` is for observables only".into()),
    })
}

// ---- Compilation of step-dependent expressions ----

/// Compiles `e` for the client: parts without `step` are evaluated here (so only integer
/// arithmetic in `step` remains); a constant float word becomes its f32 bits.
pub fn compile(e: &Expr, env: &Env) -> Result<Code, Error> {
    if !e.uses("step") {
        return Ok(vec![op::CONST, i64::from(eval(e, env)?.word())]);
    }
    let mut out = Vec::new();
    emit(e, env, &mut out)?;
    Ok(out)
}

fn emit(e: &Expr, env: &Env, out: &mut Code) -> Result<(), Error> {
    if !e.uses("step") {
        match eval(e, env)? {
            Num::I(i) => out.extend([op::CONST, i]),
            Num::F(_) => {
                return Err(
                    "an expression of `step` is integer arithmetic only (no floats in it)".into(),
                );
            }
        }
        return Ok(());
    }
    match e {
        Expr::Var(_) => out.push(op::STEP),
        Expr::Neg(a) => {
            emit(a, env, out)?;
            out.push(op::NEG);
        }
        Expr::Not(a) => {
            emit(a, env, out)?;
            out.push(op::NOT);
        }
        Expr::Bin(b, x, y) => {
            // a > b is b < a.
            let (x, y, code) = match b {
                Bin::Gt => (y, x, op::LT),
                Bin::Ge => (y, x, op::LE),
                Bin::Add => (x, y, op::ADD),
                Bin::Sub => (x, y, op::SUB),
                Bin::Mul => (x, y, op::MUL),
                Bin::Div => (x, y, op::DIV),
                Bin::Rem => (x, y, op::REM),
                Bin::Lt => (x, y, op::LT),
                Bin::Le => (x, y, op::LE),
                Bin::Eq => (x, y, op::EQ),
                Bin::Ne => (x, y, op::NE),
                Bin::And => (x, y, op::AND),
                Bin::Or => (x, y, op::OR),
            };
            emit(x, env, out)?;
            emit(y, env, out)?;
            out.push(code);
        }
        Expr::Call(f @ (Func::Min | Func::Max), args) => {
            emit(&args[0], env, out)?;
            emit(&args[1], env, out)?;
            out.push(if *f == Func::Min { op::MIN } else { op::MAX });
        }
        Expr::Call(Func::Select, args) => {
            for a in args {
                emit(a, env, out)?;
            }
            out.push(op::SELECT);
        }
        Expr::Call(Func::Abs, args) => {
            // select(x < 0, -x, x)
            emit(&args[0], env, out)?;
            out.extend([op::CONST, 0, op::LT]);
            emit(&args[0], env, out)?;
            out.push(op::NEG);
            emit(&args[0], env, out)?;
            out.push(op::SELECT);
        }
        _ => {
            return Err(
                "an expression of `step` uses only + - * / %, comparisons, && || !, min, max, \
                 abs and select"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, Num)]) -> BTreeMap<String, Num> {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    fn ev(text: &str, v: &BTreeMap<String, Num>) -> Result<Num, Error> {
        eval(&parse(text)?, &Env::new(v))
    }

    #[test]
    fn precedence_and_integer_arithmetic() {
        let v = vars(&[("L", Num::I(18)), ("beta", Num::F(0.5))]);
        assert_eq!(ev("2 * L * ((L/2 + 3) / 4)", &v), Ok(Num::I(2 * 18 * 3)));
        assert_eq!(ev("1 + 2 * 3 - 4 % 3", &v), Ok(Num::I(6)));
        assert_eq!(ev("-L + 1", &v), Ok(Num::I(-17)));
        assert_eq!(ev("L > 16 && !(L == 20) || false", &v), Ok(Num::I(1)));
        assert_eq!(ev("L / 4", &v), Ok(Num::I(4)), "integer division truncates");
        assert_eq!(ev("L / 4.0", &v), Ok(Num::F(4.5)));
        assert_eq!(ev("0x10 + 1e1", &v), Ok(Num::F(26.0)));
        assert_eq!(ev("select(L < 10, 1, 2)", &v), Ok(Num::I(2)));
        assert_eq!(ev("floor(2.7) + ceil(0.1)", &v), Ok(Num::I(3)));
        assert_eq!(
            ev("threshold(exp(-2 * beta))", &v),
            Ok(Num::I(i64::from(crate::philox::threshold((-1.0f64).exp()))))
        );
        assert_eq!(
            ev("hi(0x123456789) + lo(0x123456789)", &v),
            Ok(Num::I(1 + 0x23456789))
        );
        assert_eq!(Num::F(0.5).word(), 0.5f32.to_bits());
        assert_eq!(Num::I(-1).word(), u32::MAX);
    }

    #[test]
    fn errors_are_worded() {
        let v = vars(&[("L", Num::I(4))]);
        assert!(ev("L / 0", &v).unwrap_err().contains("division by zero"));
        assert!(
            ev("9223372036854775807 + L", &v)
                .unwrap_err()
                .contains("overflow")
        );
        assert!(ev("K + 1", &v).unwrap_err().contains("unknown name `K`"));
        assert!(ev("foo(1)", &v).unwrap_err().contains("unknown function"));
        assert!(ev("min(1)", &v).unwrap_err().contains("takes 2"));
        assert!(parse("(1 + 2").unwrap_err().contains("missing `)`"));
        assert!(parse("1 + ").unwrap_err().contains("ends too early"));
        assert!(parse("1 $ 2").unwrap_err().contains("unexpected `$`"));
        assert!(parse(&"(".repeat(100)).unwrap_err().contains("nests"));
        assert!(ev("step + 1", &v).unwrap_err().contains("step"));
    }

    #[test]
    fn step_expressions_compile_to_the_clients_code() {
        let v = vars(&[
            ("thermalize", Num::I(3)),
            ("every", Num::I(2)),
            ("x", Num::F(1.5)),
        ]);
        let env = Env::new(&v);
        let when = parse("step >= thermalize && (step + 1 - thermalize) % every == 0").unwrap();
        let slot = parse("(step + 1 - thermalize) / every - 1").unwrap();
        let (when, slot) = (compile(&when, &env).unwrap(), compile(&slot, &env).unwrap());
        let ran: Vec<(u64, i64)> = (0..10)
            .filter(|&t| protocol::package::eval(&when, t) != 0)
            .map(|t| (t, protocol::package::eval(&slot, t)))
            .collect();
        assert_eq!(ran, [(4, 0), (6, 1), (8, 2)]);
        // abs and select of step.
        let a = compile(
            &parse("abs(step - 5) + select(step > 2, 100, 0)").unwrap(),
            &env,
        )
        .unwrap();
        assert_eq!(protocol::package::eval(&a, 1), 4);
        assert_eq!(protocol::package::eval(&a, 7), 102);
        // A constant float word is its f32 bits; floats of step are refused.
        assert_eq!(
            compile(&parse("x * 2").unwrap(), &env).unwrap(),
            vec![op::CONST, i64::from(3.0f32.to_bits())]
        );
        assert!(compile(&parse("step * x").unwrap(), &env).is_err());
        assert!(compile(&parse("exp(step)").unwrap(), &env).is_err());
    }

    #[test]
    fn means_are_extracted() {
        let e = parse("1 - mean(m*m*m*m) / (3 * mean(m*m) * mean(m*m))").unwrap();
        let mut means = Vec::new();
        let outer = e.extract_means(&mut means).unwrap();
        assert_eq!(means.len(), 3);
        let v = BTreeMap::new();
        let env = Env {
            vars: &v,
            fields: None,
            reduced: &[1.0, 1.0, 1.0],
            floats: true,
        };
        assert_eq!(eval(&outer, &env), Ok(Num::F(1.0 - 1.0 / 3.0)));
        assert!(
            parse("mean(mean(m))")
                .unwrap()
                .extract_means(&mut Vec::new())
                .is_err()
        );
    }
}
