//! The object commands: `get`, `describe`, `apply`, `create -f`, `delete`, `edit`.

use std::io::Write;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::api::ListQuery;
use crate::apply::{self, Outcome};
use crate::cli::{ApplyArgs, CreateArgs, DeleteArgs, DescribeArgs, EditArgs, GetArgs, ListFlags};
use crate::describe;
use crate::duration::format_duration;
use crate::errors::{Error, Result};
use crate::manifest::{self, LAST_APPLIED};
use crate::output::{self, Columns, Format, Table};
use crate::resources::{self, ResourceKind, Selection};
use crate::Ctx;

/// Prints an error of one object among several and goes on; the caller returns the last one.
fn report(e: &Error) {
    eprintln!("error: {e}");
}

/// The end of a command over several objects: the errors but the last are printed, the last is
/// returned (and printed by `main`).
fn finish(mut errors: Vec<Error>) -> Result<()> {
    let Some(last) = errors.pop() else {
        return Ok(());
    };
    for e in &errors {
        report(e);
    }
    Err(last)
}

fn scope<'a>(ctx: &'a Ctx, kind: &ResourceKind, all_namespaces: bool) -> Option<&'a str> {
    if all_namespaces || !kind.namespaced {
        None
    } else {
        Some(ctx.namespace.as_str())
    }
}

fn list_query(flags: &ListFlags) -> ListQuery {
    ListQuery {
        label_selector: flags.selector.clone(),
        field_selector: flags.field_selector.clone(),
        ..Default::default()
    }
}

fn no_resources(ctx: &Ctx, kind: &ResourceKind, all_namespaces: bool) -> String {
    if all_namespaces || !kind.namespaced {
        "No resources found".into()
    } else {
        format!("No resources found in {} namespace.", ctx.namespace)
    }
}

fn check_names(sel: &Selection, flags: &ListFlags) -> Result<()> {
    if !sel.names.is_empty() && flags.all_namespaces && sel.kind.namespaced {
        return Err(Error::Usage(
            "a resource cannot be retrieved by name across all namespaces; drop -A or the names"
                .into(),
        ));
    }
    if !sel.names.is_empty() && flags.selector.is_some() {
        return Err(Error::Usage(
            "names and a label selector (-l) cannot be combined".into(),
        ));
    }
    Ok(())
}

/// `fvctl get`.
pub async fn get(ctx: &Ctx, args: &GetArgs) -> Result<()> {
    let selections = resources::parse_selection(&args.args)?;
    if args.watch && (selections.len() != 1 || selections[0].names.len() > 1) {
        return Err(Error::Usage(
            "-w watches one resource type, with at most one name".into(),
        ));
    }
    let mut errors = Vec::new();
    let several = selections.len() > 1;
    let mut printed_any = false;
    for sel in &selections {
        check_names(sel, &args.list)?;
        let kind = sel.kind;
        let ns = scope(ctx, kind, args.list.all_namespaces);
        let query = list_query(&args.list);
        let mut rv = None;
        let mut widths = None;
        match args.output {
            Format::Table | Format::Wide => {
                let cols = Columns {
                    wide: args.output == Format::Wide,
                    namespace: args.list.all_namespaces && kind.namespaced,
                };
                let mut table = Table::default();
                if sel.names.is_empty() {
                    let t = ctx.rest.table(kind, ns, None, &query).await?;
                    rv = t
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    table = table_of(ctx, kind, ns, &query, &t, cols).await?;
                } else {
                    for name in &sel.names {
                        match ctx.rest.table(kind, ns, Some(name), &query).await {
                            Ok(t) => table.extend(table_of(ctx, kind, ns, &query, &t, cols).await?),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                if several && !table.rows.is_empty() {
                    // Several types: name column says which kind each row is.
                    for row in &mut table.rows {
                        let i = usize::from(cols.namespace);
                        if let Some(cell) = row.get_mut(i) {
                            *cell = kind.name_of(cell);
                        }
                    }
                }
                if table.rows.is_empty() {
                    if sel.names.is_empty() && !several {
                        eprintln!("{}", no_resources(ctx, kind, args.list.all_namespaces));
                    }
                } else {
                    if printed_any {
                        println!();
                    }
                    print!("{}", table.render(!args.no_headers));
                    printed_any = true;
                }
                widths = Some(table.widths());
            }
            Format::Json | Format::Yaml | Format::Name => {
                let mut objects = Vec::new();
                if sel.names.is_empty() {
                    let list = ctx.rest.list(kind, ns, &query).await?;
                    rv = list
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    objects.extend(
                        list.get("items")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default(),
                    );
                } else {
                    for name in &sel.names {
                        match ctx.rest.get(kind, ns, name).await {
                            Ok(o) => objects.push(o),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                if args.output == Format::Name {
                    for o in &objects {
                        println!("{}", output::name_line(kind, o));
                    }
                } else if !(objects.is_empty() && args.watch) {
                    let single = sel.names.len() == 1 && !several;
                    if objects.is_empty() && sel.names.is_empty() && !several {
                        eprintln!("{}", no_resources(ctx, kind, args.list.all_namespaces));
                    }
                    let shown: Vec<Value> = objects.iter().map(output::for_output).collect();
                    if !objects.is_empty() || sel.names.is_empty() {
                        let v = output::as_list_or_single(shown, single);
                        print!(
                            "{}",
                            if args.output == Format::Json {
                                output::to_json(&v)
                            } else {
                                output::to_yaml(&v)
                            }
                        );
                    }
                }
            }
        }
        if args.watch {
            let _ = std::io::stdout().flush();
            let mut q = query.clone();
            if let Some(name) = sel.names.first() {
                q.field_selector = Some(format!("metadata.name={name}"));
                // Watch from the collection's revision (the object may not exist yet).
                rv = None;
            }
            return watch(ctx, kind, ns, q, rv, args, widths.unwrap_or_default()).await;
        }
    }
    finish(errors)
}

/// The printed table of a server answer: a Table, or (for a server that printed none) NAME/AGE.
async fn table_of(
    ctx: &Ctx,
    kind: &'static ResourceKind,
    ns: Option<&str>,
    query: &ListQuery,
    t: &Value,
    cols: Columns,
) -> Result<Table> {
    if t.get("kind").and_then(Value::as_str) == Some("Table") {
        return Table::from_server(t, cols);
    }
    let objects = match t.get("items").and_then(Value::as_array) {
        Some(items) => items.clone(),
        None if t.get("metadata").is_some() => vec![t.clone()],
        None => ctx
            .rest
            .list(kind, ns, query)
            .await?
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    };
    Ok(Table::name_age(
        &objects,
        cols.namespace,
        chrono::Utc::now(),
    ))
}

/// `get -w`: print each change until interrupted; reconnects when the server ends the watch.
async fn watch(
    ctx: &Ctx,
    kind: &'static ResourceKind,
    ns: Option<&str>,
    mut query: ListQuery,
    mut rv: Option<String>,
    args: &GetArgs,
    mut widths: Vec<usize>,
) -> Result<()> {
    let table = matches!(args.output, Format::Table | Format::Wide);
    let cols = Columns {
        wide: args.output == Format::Wide,
        namespace: args.list.all_namespaces && kind.namespaced,
    };
    let mut header_printed = !widths.is_empty();
    if rv.is_none() {
        let list = ctx.rest.list(kind, ns, &query).await?;
        rv = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    loop {
        query.resource_version = rv.clone();
        query.timeout_seconds = Some(290);
        let mut events = ctx.rest.watch(kind, ns, &query, table).await?;
        while let Some(event) = events.next().await {
            let event = event?;
            let ty = event.get("type").and_then(Value::as_str).unwrap_or("");
            let obj = event.get("object").cloned().unwrap_or(Value::Null);
            match ty {
                "BOOKMARK" => {
                    rv = obj
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or(rv);
                    continue;
                }
                "ERROR" => {
                    // Expired: list again from now.
                    rv = None;
                    break;
                }
                _ => {}
            }
            rv = obj
                .pointer("/metadata/resourceVersion")
                .or_else(|| obj.pointer("/rows/0/object/metadata/resourceVersion"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(rv);
            if table {
                let t = Table::from_server(&obj, cols)?;
                if !header_printed {
                    widths = t.widths();
                    print!("{}", output::render_row(&t.headers, &widths));
                    header_printed = true;
                }
                for row in &t.rows {
                    print!("{}", output::render_row(row, &widths));
                }
            } else {
                let shown = output::for_output(&obj);
                match args.output {
                    Format::Name => println!("{}", output::name_line(kind, &shown)),
                    Format::Json => print!("{}", output::to_json(&shown)),
                    _ => print!("---\n{}", output::to_yaml(&shown)),
                }
            }
            let _ = std::io::stdout().flush();
        }
        if rv.is_none() {
            let list = ctx
                .rest
                .list(
                    kind,
                    ns,
                    &ListQuery {
                        resource_version: None,
                        watch: false,
                        ..query.clone()
                    },
                )
                .await?;
            rv = list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
    }
}

/// `fvctl describe`.
pub async fn describe(ctx: &Ctx, args: &DescribeArgs) -> Result<()> {
    let selections = resources::parse_selection(&args.args)?;
    let mut errors = Vec::new();
    let mut first = true;
    for sel in &selections {
        check_names(sel, &args.list)?;
        let kind = sel.kind;
        let ns = scope(ctx, kind, args.list.all_namespaces);
        let mut objects = Vec::new();
        if sel.names.is_empty() {
            let list = ctx.rest.list(kind, ns, &list_query(&args.list)).await?;
            objects = list
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if objects.is_empty() {
                eprintln!("{}", no_resources(ctx, kind, args.list.all_namespaces));
            }
        } else {
            for name in &sel.names {
                match ctx.rest.get(kind, ns, name).await {
                    Ok(o) => objects.push(o),
                    Err(e) => errors.push(e),
                }
            }
        }
        for obj in objects {
            let events = events_of(ctx, kind, &obj).await.unwrap_or_default();
            if !first {
                println!();
            }
            first = false;
            print!("{}", describe::render(&obj, &events, chrono::Utc::now()));
        }
    }
    finish(errors)
}

/// The events whose involvedObject is `obj`.
async fn events_of(ctx: &Ctx, kind: &ResourceKind, obj: &Value) -> Result<Vec<Value>> {
    let events = resources::find("events").expect("known kind");
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let mut fields = format!(
        "involvedObject.name={name},involvedObject.kind={}",
        kind.kind
    );
    if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
        fields.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let list = ctx
        .rest
        .list(
            events,
            Some(ns),
            &ListQuery {
                field_selector: Some(fields),
                ..Default::default()
            },
        )
        .await?;
    Ok(list
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// `fvctl apply -f`.
pub async fn apply(ctx: &Ctx, args: &ApplyArgs) -> Result<()> {
    let manifests = manifest::read_all(&args.files)?;
    let mut last_error = None;
    for m in &manifests {
        match apply::apply_one(
            &ctx.rest,
            m,
            &ctx.namespace,
            ctx.explicit_namespace,
            args.dry_run,
        )
        .await
        {
            Ok((kind, name, outcome)) => {
                println!(
                    "{} {}{}",
                    kind.name_of(&name),
                    outcome.word(),
                    if args.dry_run { " (dry run)" } else { "" }
                )
            }
            Err(e) => {
                let e = in_manifest(e, m);
                report(&e);
                last_error = Some(e);
            }
        }
    }
    match last_error {
        Some(e) => Err(Error::Reported(e.exit_code())),
        None => Ok(()),
    }
}

/// Prefixes an error with the object it is about.
fn in_manifest(e: Error, m: &manifest::Manifest) -> Error {
    match e {
        Error::Api(mut f) => {
            let who = format!("{} {:?}", m.kind(), m.name().unwrap_or(""));
            if !f.message.contains(m.name().unwrap_or("\u{0}")) {
                f.message = format!("{who}: {}", f.message);
            }
            Error::Api(f)
        }
        other => other,
    }
}

/// `fvctl create -f`.
pub async fn create(ctx: &Ctx, args: &CreateArgs) -> Result<()> {
    let manifests = manifest::read_all(&args.files)?;
    let mut last_error = None;
    for m in &manifests {
        let result = async {
            let kind = ctx.rest.discover(m.api_version(), m.kind()).await?;
            let mut obj = manifest::strip_server_fields(&m.object);
            let ns = if kind.namespaced {
                let ns = manifest::namespace_for(m, &ctx.namespace, ctx.explicit_namespace)?;
                manifest::set_namespace(&mut obj, &ns);
                Some(ns)
            } else {
                None
            };
            let created = ctx
                .rest
                .create(kind, ns.as_deref(), &obj, args.dry_run)
                .await?;
            Ok::<_, Error>((kind, created))
        }
        .await;
        match result {
            Ok((kind, created)) => println!(
                "{} created{}",
                output::name_line(kind, &created),
                if args.dry_run { " (dry run)" } else { "" }
            ),
            Err(e) => {
                let e = in_manifest(e, m);
                report(&e);
                last_error = Some(e);
            }
        }
    }
    match last_error {
        Some(e) => Err(Error::Reported(e.exit_code())),
        None => Ok(()),
    }
}

/// `fvctl delete`.
pub async fn delete(ctx: &Ctx, args: &DeleteArgs) -> Result<()> {
    // (kind, namespace, name) of everything to delete.
    let mut targets: Vec<(&'static ResourceKind, Option<String>, String)> = Vec::new();
    if !args.files.is_empty() {
        if !args.args.is_empty() {
            return Err(Error::Usage("give either -f or TYPE NAME, not both".into()));
        }
        for m in manifest::read_all(&args.files)? {
            let kind = ctx.rest.discover(m.api_version(), m.kind()).await?;
            let ns = if kind.namespaced {
                Some(manifest::namespace_for(
                    &m,
                    &ctx.namespace,
                    ctx.explicit_namespace,
                )?)
            } else {
                None
            };
            let name = m
                .name()
                .ok_or_else(|| Error::Usage(format!("{}: metadata.name is missing", m.source)))?
                .to_string();
            targets.push((kind, ns, name));
        }
    } else {
        for sel in resources::parse_selection(&args.args)? {
            let kind = sel.kind;
            let ns = kind.namespaced.then(|| ctx.namespace.clone());
            if sel.names.is_empty() {
                if args.selector.is_none() && !args.all {
                    return Err(Error::Usage(format!(
                        "say which {} to delete: names, -l SELECTOR or --all",
                        kind.plural
                    )));
                }
                let q = ListQuery {
                    label_selector: args.selector.clone(),
                    ..Default::default()
                };
                let list = ctx.rest.list(kind, ns.as_deref(), &q).await?;
                for item in list
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) {
                        targets.push((kind, ns.clone(), name.to_string()));
                    }
                }
                if targets.is_empty() {
                    eprintln!("No resources found");
                }
            } else {
                if args.selector.is_some() || args.all {
                    return Err(Error::Usage(
                        "names cannot be combined with -l or --all".into(),
                    ));
                }
                for name in sel.names {
                    targets.push((kind, ns.clone(), name));
                }
            }
        }
    }
    let mut last_error = None;
    let mut deleted = Vec::new();
    for (kind, ns, name) in &targets {
        match ctx
            .rest
            .delete(kind, ns.as_deref(), name, args.grace_period)
            .await
        {
            Ok(gone) => {
                println!("{} {name:?} deleted", kind.qualified_singular());
                deleted.push((
                    *kind,
                    ns.clone(),
                    name.clone(),
                    gone.pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                ));
            }
            Err(Error::NotFound { .. }) if args.ignore_not_found => {}
            Err(e) if targets.len() == 1 => last_error = Some(e),
            Err(e) => {
                report(&e);
                last_error = Some(e);
            }
        }
    }
    if args.wait {
        let deadline = Instant::now() + args.timeout;
        for (kind, ns, name, uid) in &deleted {
            loop {
                let live = ctx.rest.get_opt(kind, ns.as_deref(), name).await?;
                let gone = match (&live, uid) {
                    (None, _) => true,
                    (Some(l), Some(uid)) => {
                        l.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
                    }
                    (Some(_), None) => false,
                };
                if gone {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout(format!(
                        "timed out after {} waiting for {} {name:?} to be gone",
                        format_duration(args.timeout),
                        kind.qualified_singular()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    match last_error {
        Some(e) if targets.len() == 1 => Err(e),
        Some(e) => Err(Error::Reported(e.exit_code())),
        None => Ok(()),
    }
}

const EDIT_HEADER: &str = "\
# Please edit the object below. Lines beginning with a '#' will be ignored,
# and an empty file will abort the edit. If an error occurs while saving this file will be
# reopened with the relevant failures.
#
";

/// The editor command: $FVCTL_EDITOR, $KUBE_EDITOR, $EDITOR, $VISUAL, else vi.
fn editor() -> Vec<String> {
    let cmd = ["FVCTL_EDITOR", "KUBE_EDITOR", "EDITOR", "VISUAL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| "vi".into());
    cmd.split_whitespace().map(str::to_string).collect()
}

/// The YAML of an edited file without its comment lines; `None` when nothing is left.
pub fn edited_content(text: &str) -> Option<String> {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    (!body.trim().is_empty()).then_some(body)
}

/// `fvctl edit`.
pub async fn edit(ctx: &Ctx, args: &EditArgs) -> Result<()> {
    let selections = resources::parse_selection(&args.args)?;
    let [sel] = selections.as_slice() else {
        return Err(Error::Usage("edit one object: TYPE NAME".into()));
    };
    let [name] = sel.names.as_slice() else {
        return Err(Error::Usage("edit one object: TYPE NAME".into()));
    };
    let kind = sel.kind;
    let ns = scope(ctx, kind, false);
    let live = ctx.rest.get(kind, ns, name).await?;
    let original = output::for_output(&live);
    let mut file = tempfile::Builder::new()
        .prefix(&format!("fvctl-edit-{}-", kind.singular))
        .suffix(".yaml")
        .tempfile()
        .map_err(|e| Error::io("cannot create a temporary file to edit", e))?;
    let mut text = format!("{EDIT_HEADER}{}", output::to_yaml(&original));
    let mut last_error: Option<Error> = None;
    // The body the editor was last reopened with, after an error.
    let mut reopened: Option<String> = None;
    loop {
        std::fs::write(file.path(), &text)
            .map_err(|e| Error::io(format!("cannot write {}", file.path().display()), e))?;
        let cmd = editor();
        let status = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .arg(file.path())
            .status()
            .map_err(|e| {
                Error::io(
                    format!("cannot start the editor {:?} (set EDITOR)", cmd.join(" ")),
                    e,
                )
            })?;
        if !status.success() {
            return Err(Error::Failed(format!(
                "the editor {:?} failed ({status}); nothing was changed",
                cmd.join(" ")
            )));
        }
        let edited_text = std::fs::read_to_string(file.path())
            .map_err(|e| Error::io("cannot read the edited file", e))?;
        let Some(body) = edited_content(&edited_text) else {
            println!("Edit cancelled, no changes made.");
            return Ok(());
        };
        if reopened.as_deref() == Some(body.as_str()) {
            if let Some(e) = last_error {
                // Saved again without fixing what was refused.
                let kept = keep_copy(&mut file)?;
                eprintln!("A copy of your changes has been stored to {kept}");
                return Err(e);
            }
        }
        let edited: Value = match serde_yaml_ng::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                let e = Error::Usage(format!("the edited file is not valid YAML: {e}"));
                eprintln!("error: {e}");
                text = with_error_comment(&edited_text, &e);
                reopened = Some(body);
                last_error = Some(e);
                continue;
            }
        };
        if edited == original {
            println!("Edit cancelled, no changes made.");
            return Ok(());
        }
        for (field, what) in [
            ("/kind", "kind"),
            ("/apiVersion", "apiVersion"),
            ("/metadata/name", "metadata.name"),
        ] {
            if edited.pointer(field) != original.pointer(field) {
                return Err(Error::Usage(format!(
                    "the edit changed {what}, which cannot be changed; nothing was saved"
                )));
            }
        }
        let mut obj = edited.clone();
        if let Some(a) = obj
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            // An edit is not an apply; keep the last-applied record as it was.
            if let Some(v) = original
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(LAST_APPLIED))
            {
                a.insert(LAST_APPLIED.into(), v.clone());
            }
        }
        match ctx.rest.replace(kind, ns, name, &obj).await {
            Ok(_) => {
                println!("{} edited", kind.name_of(name));
                return Ok(());
            }
            Err(e @ (Error::Api(_) | Error::NotFound { .. })) => {
                eprintln!("error: {e}");
                text = with_error_comment(&body, &e);
                reopened = Some(body);
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
}

fn with_error_comment(text: &str, e: &Error) -> String {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let comment: String = e.to_string().lines().map(|l| format!("# {l}\n")).collect();
    format!("{EDIT_HEADER}{comment}#\n{body}")
}

fn keep_copy(file: &mut tempfile::NamedTempFile) -> Result<String> {
    let path = file.path().to_path_buf();
    let kept = path.with_extension("kept.yaml");
    std::fs::copy(&path, &kept).map_err(|e| Error::io("cannot keep a copy of the edit", e))?;
    Ok(kept.display().to_string())
}

/// Prints an apply-style outcome line (used by `create vm --apply`).
pub fn print_outcome(kind: &ResourceKind, name: &str, outcome: Outcome) {
    println!("{} {}", kind.name_of(name), outcome.word());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_dropped_from_edits() {
        assert_eq!(
            edited_content("# a\nkind: X\n  # b\nx: 1\n").as_deref(),
            Some("kind: X\nx: 1\n")
        );
        assert_eq!(edited_content("# only comments\n\n"), None);
    }

    #[test]
    fn errors_go_on_top_of_the_reopened_file() {
        let text = with_error_comment("# old\nkind: X\n", &Error::Failed("bad\nworse".into()));
        assert!(text.starts_with(EDIT_HEADER));
        assert!(text.ends_with("# bad\n# worse\n#\nkind: X\n"), "{text}");
    }
}
