//! A package's WGSL checked with naga before anything is stored: it parses and validates with
//! the project's prelude prepended (errors with the package's own line and column), it follows
//! the binding convention with the types its manifest declares, its entry points and
//! workgroup sizes are the manifest's, and a `digest` package is integer-only.

use super::PackageError;
use super::manifest::{Comparison, Elem, Manifest};
use naga::{AddressSpace, ArraySize, Module, ScalarKind, ShaderStage, Span, TypeInner};

use super::prelude;

/// What the runner compiles: the prelude, then the package's WGSL from a new line.
pub fn full_source(wgsl: &str) -> String {
    format!("{}{wgsl}", prelude())
}

/// Lines the prelude takes (the package's line `n` is line `n + offset` of the full source).
fn offset() -> u32 {
    prelude().matches('\n').count() as u32
}

fn at(file: &'static str, full: &str, span: Span, message: String) -> PackageError {
    at_offset(file, full, span, message, offset())
}

fn at_offset(
    file: &'static str,
    full: &str,
    span: Span,
    message: String,
    off: u32,
) -> PackageError {
    let loc = span.location(full);
    let (line, column) = if span.is_defined() && loc.line_number > off {
        (
            Some((loc.line_number - off) as usize),
            Some(loc.line_position as usize),
        )
    } else {
        (None, None)
    };
    PackageError {
        file,
        field: None,
        line,
        column,
        message,
    }
}

fn plain(message: impl Into<String>) -> PackageError {
    PackageError {
        file: "kernel.wgsl",
        field: None,
        line: None,
        column: None,
        message: message.into(),
    }
}

/// Parses and validates the package's WGSL against its manifest.
pub fn check(m: &Manifest, wgsl: &str) -> Result<(), PackageError> {
    let full = full_source(wgsl);
    let module = naga::front::wgsl::parse_str(&full).map_err(|e| parse_error(&e, &full))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .map_err(|e| {
        let (span, context) = e
            .spans()
            .next()
            .map_or((Span::UNDEFINED, String::new()), |s| (s.0, s.1.clone()));
        let mut message = chain(&e);
        if !context.is_empty() {
            message.push_str(&format!(" ({context})"));
        }
        at("kernel.wgsl", &full, span, message)
    })?;
    bindings(m, &module, &full)?;
    entries(m, &module)?;
    if m.comparison == Comparison::Digest {
        integer_only(&module, &info, &full)?;
    }
    Ok(())
}

/// A parse error at its first located label, with that label's words.
fn parse_error(e: &naga::front::wgsl::ParseError, full: &str) -> PackageError {
    let label = e.labels().find(|(span, _)| span.is_defined());
    let mut message = e.message().to_owned();
    if let Some((_, words)) = label
        && !words.is_empty()
    {
        message.push_str(&format!(" ({words})"));
    }
    match label {
        Some((span, _)) if span.location(full).line_number > offset() => {
            at("kernel.wgsl", full, span, message)
        }
        _ => plain(format!(
            "{message} (a name the prelude defines? see the ABI in the package docs)"
        )),
    }
}

/// An error and its causes, in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// `@group(0) @binding(0)` is the prelude's words; `@binding(1 + i)` is buffer `i`, a
/// read-write storage array of its element type (atomics of it allowed); nothing else.
fn bindings(m: &Manifest, module: &Module, full: &str) -> Result<(), PackageError> {
    let mut seen = vec![false; m.buffers.len()];
    for (h, g) in module.global_variables.iter() {
        let span = module.global_variables.get_span(h);
        let name = g.name.clone().unwrap_or_default();
        let Some(b) = &g.binding else {
            if matches!(
                g.space,
                AddressSpace::Handle | AddressSpace::Uniform | AddressSpace::Storage { .. }
            ) {
                return Err(at(
                    "kernel.wgsl",
                    full,
                    span,
                    format!("`{name}` needs a binding"),
                ));
            }
            continue;
        };
        if b.group == 0 && b.binding == 0 {
            continue; // the prelude's words
        }
        let index = b.binding as usize;
        if b.group != 0 || index == 0 || index > m.buffers.len() {
            return Err(at(
                "kernel.wgsl",
                full,
                span,
                format!(
                    "`{name}` is @group({}) @binding({}): a package binds group 0 only, binding 0 \
                     (the prelude's words) and 1 to {} (its buffers, in the manifest's order)",
                    b.group,
                    b.binding,
                    m.buffers.len()
                ),
            ));
        }
        let buf = &m.buffers[index - 1];
        let read_write = matches!(g.space, AddressSpace::Storage { access }
            if access.contains(naga::StorageAccess::LOAD | naga::StorageAccess::STORE));
        let elem = match &module.types[g.ty].inner {
            TypeInner::Array {
                base,
                size: ArraySize::Dynamic,
                ..
            } => match &module.types[*base].inner {
                TypeInner::Scalar(s) | TypeInner::Atomic(s) if s.width == 4 => Some(s.kind),
                _ => None,
            },
            _ => None,
        };
        let want = match buf.elem {
            Elem::U32 => ScalarKind::Uint,
            Elem::I32 => ScalarKind::Sint,
            Elem::F32 => ScalarKind::Float,
        };
        if !read_write || elem != Some(want) {
            return Err(at(
                "kernel.wgsl",
                full,
                span,
                format!(
                    "binding {index} is buffer `{}`: declare it `var<storage, read_write> {}: \
                     array<{}>` (or of atomic<{}>)",
                    buf.name,
                    buf.name,
                    buf.elem.name(),
                    buf.elem.name()
                ),
            ));
        }
        seen[index - 1] = true;
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(plain(format!(
            "buffer `{}` (binding {}) is not declared",
            m.buffers[i].name,
            i + 1
        )));
    }
    Ok(())
}

/// The manifest's entry points are compute shaders of those workgroup sizes.
fn entries(m: &Manifest, module: &Module) -> Result<(), PackageError> {
    for (name, size) in &m.entries {
        let Some(ep) = module.entry_points.iter().find(|e| &e.name == name) else {
            return Err(plain(format!("no entry point `{name}` (entries lists it)")));
        };
        if ep.stage != ShaderStage::Compute {
            return Err(plain(format!("`{name}` is not a @compute entry point")));
        }
        if ep.workgroup_size_overrides.is_some() || ep.workgroup_size != [*size, 1, 1] {
            return Err(plain(format!(
                "`{name}` has @workgroup_size({}, {}, {}); the manifest says {size} (one \
                 dimension, a constant)",
                ep.workgroup_size[0], ep.workgroup_size[1], ep.workgroup_size[2]
            )));
        }
    }
    Ok(())
}

fn is_float(module: &Module, inner: &TypeInner, depth: u32) -> bool {
    if depth > 16 {
        return false;
    }
    let scalar = |s: &naga::Scalar| matches!(s.kind, ScalarKind::Float | ScalarKind::AbstractFloat);
    match inner {
        TypeInner::Scalar(s) | TypeInner::Atomic(s) => scalar(s),
        TypeInner::Vector { scalar: s, .. }
        | TypeInner::Matrix { scalar: s, .. }
        | TypeInner::ValuePointer { scalar: s, .. }
        | TypeInner::CooperativeMatrix { scalar: s, .. } => scalar(s),
        TypeInner::Pointer { base, .. } | TypeInner::Array { base, .. } => {
            is_float(module, &module.types[*base].inner, depth + 1)
        }
        TypeInner::Struct { members, .. } => members
            .iter()
            .any(|mb| is_float(module, &module.types[mb.ty].inner, depth + 1)),
        _ => false,
    }
}

/// A digest package's results are compared bit for bit across devices whose floating point
/// differs: no float type or operation anywhere in its code (a float that never reached the
/// state would be dead code), named by its line.
fn integer_only(
    module: &Module,
    info: &naga::valid::ModuleInfo,
    full: &str,
) -> Result<(), PackageError> {
    let refuse = |span: Span, what: &str| {
        at(
            "kernel.wgsl",
            full,
            span,
            format!(
                "{what}: a `digest` package is integer-only (floats differ between devices); \
                 compare by tolerance, or compute in integers (thresholds come from the manifest)"
            ),
        )
    };
    for (h, g) in module.global_variables.iter() {
        if is_float(module, &module.types[g.ty].inner, 0) {
            return Err(refuse(
                module.global_variables.get_span(h),
                &format!("`{}` holds floats", g.name.clone().unwrap_or_default()),
            ));
        }
    }
    for (h, c) in module.constants.iter() {
        if is_float(module, &module.types[c.ty].inner, 0) {
            return Err(refuse(
                module.constants.get_span(h),
                &format!(
                    "the constant `{}` is a float",
                    c.name.clone().unwrap_or_default()
                ),
            ));
        }
    }
    let functions = module.functions.iter().map(|(h, f)| (f, &info[h])).chain(
        module
            .entry_points
            .iter()
            .enumerate()
            .map(|(i, ep)| (&ep.function, info.get_entry_point(i))),
    );
    for (f, fi) in functions {
        for (h, _) in f.local_variables.iter() {
            let v = &f.local_variables[h];
            if is_float(module, &module.types[v.ty].inner, 0) {
                return Err(refuse(
                    f.local_variables.get_span(h),
                    &format!("`{}` is a float", v.name.clone().unwrap_or_default()),
                ));
            }
        }
        for (h, _) in f.expressions.iter() {
            let ty = fi[h].ty.inner_with(&module.types);
            if is_float(module, ty, 0) {
                return Err(refuse(f.expressions.get_span(h), "a floating-point value"));
            }
        }
    }
    Ok(())
}

/// Checks a package's `view.wgsl` (`full`: after the shared view code): it parses and
/// validates, and has the entry points the runner draws with (`view_vs`, `view_fs`).
pub fn check_view(full: &str, view: &str) -> Result<(), PackageError> {
    let off = (full.len() - view.len()).min(full.len());
    let off = full[..off].matches('\n').count() as u32;
    let located = |loc: Option<naga::SourceLocation>, message: String| match loc {
        Some(l) if l.line_number > off => PackageError {
            file: "view.wgsl",
            field: None,
            line: Some((l.line_number - off) as usize),
            column: Some(l.line_position as usize),
            message,
        },
        _ => PackageError {
            file: "view.wgsl",
            field: None,
            line: None,
            column: None,
            message,
        },
    };
    let module = naga::front::wgsl::parse_str(full)
        .map_err(|e| located(e.location(full), e.message().to_owned()))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .map_err(|e| located(e.location(full), chain(&e)))?;
    for (name, stage) in [
        ("view_vs", ShaderStage::Vertex),
        ("view_fs", ShaderStage::Fragment),
    ] {
        if !module
            .entry_points
            .iter()
            .any(|e| e.name == name && e.stage == stage)
        {
            return Err(located(
                None,
                format!(
                    "no {stage:?} entry point `{name}` (the runner draws with view_vs and view_fs)"
                ),
            ));
        }
    }
    Ok(())
}
