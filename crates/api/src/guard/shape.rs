//! What an operation asks for, read from its parsed document before anything executes.
//!
//! Pure functions over the AST: the limits they enforce are decided here, in microseconds,
//! without a schema, a database or a hash.

use std::collections::HashMap;

use async_graphql::Name;
use async_graphql::parser::Positioned;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, OperationType, Selection, SelectionSet,
};

/// Root fields that cost a password hash or start background work: `register` and `login`
/// hash (argon2id, 19 MiB and ~20 ms each), `startReport` starts three workflows. Aliases
/// would otherwise multiply them in one request.
pub const COSTLY_FIELDS: [&str; 3] = ["register", "login", "startReport"];

/// Costly root fields an operation may hold, aliases included.
pub const MAX_COSTLY_FIELDS: usize = 1;

/// Root fields an operation may select, aliases included. Our widest legitimate operation
/// (`me` plus a few `reportStatus`) has well under this; every root field is a database query.
pub const MAX_ROOT_FIELDS: usize = 10;

/// Deepest selection of an operation. Our deepest legitimate query (`report { contents { id } }`)
/// is 3 levels, and no type of the schema is recursive.
pub const MAX_DEPTH: usize = 8;

/// Deepest introspection (`__schema`, `__type`) selection. The standard introspection query of
/// graphql-js and graphql-core (GraphiQL's docs, codegen, schemathesis) is 13 levels deep; its
/// `ofType` chain may grow in newer versions.
pub const MAX_INTROSPECTION_DEPTH: usize = 16;

/// Fields of `__Type` that expand to more types. Nesting two of them (`fields { type { fields
/// ... } }`) walks the type graph again at every level, growing the answer exponentially with
/// the query's depth; the standard introspection query never does.
const TYPE_EXPANSIONS: [&str; 4] = ["fields", "inputFields", "interfaces", "possibleTypes"];

/// Why an operation is refused before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// More than [`MAX_COSTLY_FIELDS`] costly root fields.
    CostlyFields {
        /// Every costly root field found, in order (with repetitions).
        found: Vec<String>,
    },
    /// More than [`MAX_ROOT_FIELDS`] root fields.
    RootFields(usize),
    /// Deeper than [`MAX_DEPTH`].
    Depth(usize),
    /// Deeper than [`MAX_INTROSPECTION_DEPTH`], or re-expanding types.
    Introspection(&'static str),
    /// Fragments that expand past what the check walks.
    TooLarge,
    /// A subscription selecting other than exactly one root field (GraphQL's "single root
    /// field" rule): one socket message, one subscription, one slot of the bounds.
    SubscriptionRootFields(usize),
    /// The operation came over the wrong transport: subscriptions only over graphql-ws,
    /// queries and mutations only over `POST /graphql`.
    Transport(&'static str),
}

impl Refusal {
    /// The `extensions.reason` of the refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::CostlyFields { .. } => "costlyFields",
            Self::RootFields(_) | Self::SubscriptionRootFields(_) => "rootFields",
            Self::Depth(_) => "depth",
            Self::Introspection(_) => "introspection",
            Self::TooLarge => "size",
            Self::Transport(_) => "transport",
        }
    }

    /// A message for the client.
    pub fn message(&self) -> String {
        match self {
            Self::CostlyFields { found } => format!(
                "an operation may contain at most {MAX_COSTLY_FIELDS} of {}, aliases included; found {}: {}",
                COSTLY_FIELDS.join(", "),
                found.len(),
                summarize(found),
            ),
            Self::RootFields(n) => {
                format!("an operation may select at most {MAX_ROOT_FIELDS} root fields, aliases included; found {n}")
            }
            Self::Depth(n) => format!("an operation may be at most {MAX_DEPTH} levels deep; found {n}"),
            Self::Introspection(what) => format!("introspection refused: {what}"),
            Self::TooLarge => format!("the operation expands to more than {MAX_VISITS} selections"),
            Self::SubscriptionRootFields(n) => {
                format!("a subscription must select exactly one root field; found {n}")
            }
            Self::Transport(what) => (*what).to_owned(),
        }
    }
}

/// `login x120` rather than 120 names.
fn summarize(found: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for name in found {
        match counts.iter_mut().find(|(n, _)| n == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .iter()
        .map(|(name, count)| {
            if *count == 1 {
                (*name).to_owned()
            } else {
                format!("{name} x{count}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

type Fragments = HashMap<Name, Positioned<FragmentDefinition>>;

/// Checks every operation of the document against the limits above.
///
/// Runs before validation, so it tolerates what validation refuses later: an unknown fragment
/// counts as empty, and a document whose fragments spread each other in a cycle is left to
/// validation, which refuses it with its own message.
///
/// With `introspection` off, any `__schema` or `__type` is refused with a clear message (the
/// schema's own switch would only answer null).
///
/// # Errors
/// The first [`Refusal`] met.
pub fn check(document: &ExecutableDocument, introspection: bool) -> Result<(), Refusal> {
    if has_fragment_cycle(&document.fragments) {
        return Ok(());
    }
    let mut walker = Walker {
        fragments: &document.fragments,
        spreading: Vec::new(),
        visits: 0,
    };
    for (_, operation) in document.operations.iter() {
        let mut roots = Vec::new();
        walker.flatten(&operation.node.selection_set.node, &mut roots)?;
        if operation.node.ty == OperationType::Subscription && roots.len() != 1 {
            return Err(Refusal::SubscriptionRootFields(roots.len()));
        }
        let costly: Vec<String> = roots
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| COSTLY_FIELDS.contains(name))
            .map(str::to_owned)
            .collect();
        if costly.len() > MAX_COSTLY_FIELDS {
            return Err(Refusal::CostlyFields { found: costly });
        }
        if roots.len() > MAX_ROOT_FIELDS {
            return Err(Refusal::RootFields(roots.len()));
        }
        for (name, selection) in roots {
            let introspects = matches!(name.as_str(), "__schema" | "__type");
            if introspects && !introspection {
                return Err(Refusal::Introspection("it is turned off on this server"));
            }
            let depth = 1 + walker.depth(selection, introspects, 0)?;
            if introspects && depth > MAX_INTROSPECTION_DEPTH {
                return Err(Refusal::Introspection("nested too deep"));
            }
            if !introspects && depth > MAX_DEPTH {
                return Err(Refusal::Depth(depth));
            }
        }
    }
    Ok(())
}

/// Checks that the operation to run (the one named `operation_name`, or the only one) came
/// over its transport: a subscription over graphql-ws, anything else over HTTP. Queries and
/// mutations are refused on the socket so that they keep the HTTP path's protections (request
/// timeout, 429/503 with `Retry-After`) and one way in; an operation that cannot be picked is
/// left to execution, which refuses it with its own message.
///
/// # Errors
/// [`Refusal::Transport`].
pub fn check_transport(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    over_websocket: bool,
) -> Result<(), Refusal> {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => operations.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    };
    let Some(operation) = operation else {
        return Ok(());
    };
    match (operation.node.ty == OperationType::Subscription, over_websocket) {
        (true, false) => Err(Refusal::Transport(
            "subscriptions are served over the graphql-ws protocol (a websocket on /graphql)",
        )),
        (false, true) => Err(Refusal::Transport(
            "queries and mutations go over HTTP POST /graphql; this socket serves subscriptions",
        )),
        _ => Ok(()),
    }
}

/// Whether some fragment spreads itself, directly or through others, at any depth.
fn has_fragment_cycle(fragments: &Fragments) -> bool {
    fn spreads<'a>(set: &'a SelectionSet, out: &mut Vec<&'a Name>) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => spreads(&field.node.selection_set.node, out),
                Selection::InlineFragment(inline) => spreads(&inline.node.selection_set.node, out),
                Selection::FragmentSpread(spread) => out.push(&spread.node.fragment_name.node),
            }
        }
    }
    fn visit<'a>(name: &'a Name, fragments: &'a Fragments, path: &mut Vec<&'a Name>, done: &mut Vec<&'a Name>) -> bool {
        if path.contains(&name) {
            return true;
        }
        if done.contains(&name) {
            return false;
        }
        let Some(fragment) = fragments.get(name) else {
            return false;
        };
        let mut next = Vec::new();
        spreads(&fragment.node.selection_set.node, &mut next);
        path.push(name);
        let cyclic = next.into_iter().any(|n| visit(n, fragments, path, done));
        path.pop();
        done.push(name);
        cyclic
    }
    let mut done = Vec::new();
    fragments
        .keys()
        .any(|name| visit(name, fragments, &mut Vec::new(), &mut done))
}

/// Fields the check visits at most. Fragments spreading other fragments several times can make
/// a small document expand exponentially; past this the document is refused rather than walked.
const MAX_VISITS: usize = 10_000;

struct Walker<'a> {
    fragments: &'a Fragments,
    /// Fragments being spread on the current path, to cut cycles.
    spreading: Vec<&'a Name>,
    visits: usize,
}

impl<'a> Walker<'a> {
    /// The fields a selection set selects at its own level, with fragments spread in.
    fn flatten(&mut self, set: &'a SelectionSet, out: &mut Vec<(&'a Name, &'a SelectionSet)>) -> Result<(), Refusal> {
        for item in &set.items {
            self.visits += 1;
            if self.visits > MAX_VISITS {
                return Err(Refusal::TooLarge);
            }
            match &item.node {
                Selection::Field(field) => out.push((&field.node.name.node, &field.node.selection_set.node)),
                Selection::InlineFragment(inline) => self.flatten(&inline.node.selection_set.node, out)?,
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if self.spreading.contains(&name) {
                        continue;
                    }
                    if let Some(fragment) = self.fragments.get(name) {
                        self.spreading.push(name);
                        let flattened = self.flatten(&fragment.node.selection_set.node, out);
                        self.spreading.pop();
                        flattened?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Levels below `set` (0 for a leaf). Inside introspection, `expansions` counts the
    /// [`TYPE_EXPANSIONS`] on the path.
    fn depth(&mut self, set: &'a SelectionSet, introspection: bool, expansions: usize) -> Result<usize, Refusal> {
        let mut fields = Vec::new();
        self.flatten(set, &mut fields)?;
        let mut deepest = 0;
        for (name, below) in fields {
            let expansions = expansions + usize::from(TYPE_EXPANSIONS.contains(&name.as_str()));
            if introspection && expansions > 1 {
                return Err(Refusal::Introspection(
                    "a type's fields, interfaces or possible types may not be expanded twice on one path",
                ));
            }
            deepest = deepest.max(1 + self.depth(below, introspection, expansions)?);
        }
        Ok(deepest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_query(query: &str) -> Result<(), Refusal> {
        check(&async_graphql::parser::parse_query(query).unwrap(), true)
    }

    #[test]
    fn one_costly_field_passes_and_aliases_of_it_are_refused() {
        assert_eq!(check_query("mutation { login(input: {}) { token } }"), Ok(()));
        let aliased = "mutation { a: login(input: {}) { token } b: login(input: {}) { token } }";
        assert_eq!(
            check_query(aliased),
            Err(Refusal::CostlyFields {
                found: vec!["login".into(), "login".into()]
            })
        );
    }

    #[test]
    fn two_different_costly_fields_are_refused() {
        let refused = check_query("mutation { startReport { reportId } register(input: {}) { token } }");
        assert!(matches!(refused, Err(Refusal::CostlyFields { .. })), "{refused:?}");
    }

    #[test]
    fn costly_fields_hidden_in_fragments_are_counted() {
        let query = "mutation { ...A ... on Mutation { login(input: {}) { token } } }
                     fragment A on Mutation { login(input: {}) { token } }";
        assert!(matches!(check_query(query), Err(Refusal::CostlyFields { .. })));
    }

    #[test]
    fn the_message_summarizes_repeated_fields() {
        let aliases: String = (0..120)
            .map(|i| format!("a{i}: login(input: {{}}) {{ token }} "))
            .collect();
        let refusal = check_query(&format!("mutation {{ {aliases} }}")).unwrap_err();
        assert!(
            refusal.message().ends_with("found 120: login x120"),
            "{}",
            refusal.message()
        );
        assert_eq!(refusal.reason(), "costlyFields");
    }

    #[test]
    fn root_fields_are_capped_aliases_included() {
        let fields = |n: usize| {
            (0..n)
                .map(|i| format!("s{i}: reportStatus(id: \"x\") {{ status }} "))
                .collect::<String>()
        };
        assert_eq!(check_query(&format!("{{ {} }}", fields(MAX_ROOT_FIELDS))), Ok(()));
        assert_eq!(
            check_query(&format!("{{ {} }}", fields(MAX_ROOT_FIELDS + 1))),
            Err(Refusal::RootFields(MAX_ROOT_FIELDS + 1))
        );
    }

    #[test]
    fn operations_deeper_than_the_limit_are_refused() {
        let nested = |levels: usize| format!("{{ {}x{} }}", "a { ".repeat(levels - 1), " }".repeat(levels - 1));
        assert_eq!(check_query(&nested(MAX_DEPTH)), Ok(()));
        assert_eq!(check_query(&nested(MAX_DEPTH + 1)), Err(Refusal::Depth(MAX_DEPTH + 1)));
    }

    #[test]
    fn the_standard_introspection_query_passes() {
        assert_eq!(check_query(STANDARD_INTROSPECTION_QUERY), Ok(()));
    }

    #[test]
    fn introspection_turned_off_is_refused_and_typename_still_answers() {
        let document = |q: &str| async_graphql::parser::parse_query(q).unwrap();
        assert_eq!(
            check(&document("{ __type(name: \"Query\") { name } }"), false),
            Err(Refusal::Introspection("it is turned off on this server"))
        );
        assert_eq!(check(&document("{ __typename }"), false), Ok(()));
    }

    #[test]
    fn introspection_that_walks_the_type_graph_again_is_refused() {
        let refused = check_query("{ __type(name: \"Query\") { fields { type { fields { type { name } } } } } }");
        assert!(matches!(refused, Err(Refusal::Introspection(_))), "{refused:?}");
    }

    #[test]
    fn introspection_deeper_than_its_limit_is_refused() {
        let chain = "ofType { ".repeat(MAX_INTROSPECTION_DEPTH);
        let query = format!(
            "{{ __type(name: \"Query\") {{ {chain} name {} }} }}",
            "} ".repeat(MAX_INTROSPECTION_DEPTH)
        );
        assert_eq!(check_query(&query), Err(Refusal::Introspection("nested too deep")));
    }

    #[test]
    fn fragments_that_expand_exponentially_are_refused() {
        // Each fragment spreads the next one twice: 2^20 selections from a few lines.
        let mut query = String::from("{ ...F0 }");
        for i in 0..20 {
            query.push_str(&format!(" fragment F{i} on Query {{ ...F{} ...F{} }}", i + 1, i + 1));
        }
        query.push_str(" fragment F20 on Query { me { id } }");
        assert_eq!(check_query(&query), Err(Refusal::TooLarge));
    }

    #[test]
    fn fragment_cycles_and_unknown_fragments_do_not_hang_the_check() {
        let query = "{ ...A ...Missing } fragment A on Query { me { ...B } } fragment B on User { ...A }";
        assert_eq!(check_query(query), Ok(()));
    }

    #[test]
    fn a_subscription_selects_exactly_one_root_field() {
        let one = "subscription { reportUpdated(id: \"x\") { status } }";
        let two = "subscription { a: reportUpdated(id: \"x\") { status } b: reportUpdated(id: \"y\") { status } }";
        assert_eq!(check_query(one), Ok(()));
        assert_eq!(check_query(two), Err(Refusal::SubscriptionRootFields(2)));
        assert_eq!(Refusal::SubscriptionRootFields(2).reason(), "rootFields");
    }

    #[test]
    fn subscriptions_come_over_the_socket_only_and_everything_else_over_http_only() {
        let document = |q: &str| async_graphql::parser::parse_query(q).unwrap();
        let subscription = document("subscription { reportUpdated(id: \"x\") { status } }");
        let query = document("{ me { id } }");
        let both = document("query Q { me { id } } subscription S { reportUpdated(id: \"x\") { status } }");

        assert_eq!(check_transport(&subscription, None, true), Ok(()));
        assert_eq!(check_transport(&query, None, false), Ok(()));
        assert!(matches!(
            check_transport(&subscription, None, false),
            Err(Refusal::Transport(_))
        ));
        assert!(matches!(
            check_transport(&query, None, true),
            Err(Refusal::Transport(_))
        ));
        // The operation picked by name decides, whatever else the document holds (GraphiQL
        // sends its whole editor).
        assert_eq!(check_transport(&both, Some("S"), true), Ok(()));
        assert_eq!(check_transport(&both, Some("Q"), false), Ok(()));
        assert!(matches!(
            check_transport(&both, Some("Q"), true),
            Err(Refusal::Transport(_))
        ));
        assert_eq!(check_transport(&both, None, true), Ok(()), "left to execution");
    }

    /// `getIntrospectionQuery()` of graphql-js 16 (the query GraphiQL's docs explorer sends),
    /// with every option on.
    pub(crate) const STANDARD_INTROSPECTION_QUERY: &str = include_str!("introspection_query.graphql");
}
