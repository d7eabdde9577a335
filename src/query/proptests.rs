//! Property tests: the parser never panics, and printing a tree then parsing it gives it back.

use proptest::prelude::*;

use super::ast::{
    ArithOp, CmpOp, Condition, Constant, Expr, Item, LogicOp, Path, Projection, Query, Selected,
    Source,
};
use super::parser::is_keyword;
use super::{parse_condition, parse_query};

/// Pieces of the grammar, glued at random into "token soup".
const TOKENS: &[&str] = &[
    "SELECT",
    "select",
    "TOP",
    "*",
    "FROM",
    "devices",
    "devices.jobs",
    "WHERE",
    "GROUP",
    "BY",
    "AS",
    "COUNT()",
    "COUNT",
    "AND",
    "or",
    "NOT",
    "IN",
    "NIN",
    "IS_DEFINED",
    "true",
    "FALSE",
    "null",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "=",
    "!=",
    "<>",
    "<",
    ">",
    "<=",
    ">=",
    "+",
    "-",
    "/",
    "%",
    "deviceId",
    "tags",
    "properties.reported.x",
    "jobs",
    "'a'",
    "\"b\"",
    "'\\u00e9'",
    "'\\'",
    "0x1F",
    "0x",
    "12",
    "1.5",
    "-3",
    "'",
    "\"",
    "\\",
    "\n",
    "#",
];

proptest! {
    #[test]
    fn parsing_arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse_query(&text);
        let _ = parse_condition(&text);
    }

    #[test]
    fn token_soup_never_panics_and_what_parses_prints_back(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..24),
        glue in prop::sample::select(&[" ", ""][..]),
    ) {
        let text = tokens.join(glue);
        if let Ok(query) = parse_query(&text) {
            prop_assert_eq!(parse_query(&query.to_string()), Ok(query));
        }
        if let Ok(condition) = parse_condition(&text) {
            prop_assert_eq!(parse_condition(&condition.to_string()), Ok(condition));
        }
    }

    #[test]
    fn printed_conditions_parse_back_to_the_same_tree(condition in condition()) {
        let text = condition.to_string();
        prop_assert_eq!(parse_condition(&text), Ok(condition), "printed as {}", text);
    }

    #[test]
    fn printed_queries_parse_back_to_the_same_tree(query in query()) {
        let text = query.to_string();
        prop_assert_eq!(parse_query(&text), Ok(query), "printed as {}", text);
    }
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_$][a-zA-Z0-9_$]{0,6}"
}

/// A path as the parser produces it: no keyword first, and never `devices...` (which a
/// `FROM devices.jobs` query would strip).
fn path() -> impl Strategy<Value = Path> {
    let first = name().prop_filter("a path cannot start with a keyword or 'devices'", |n| {
        !is_keyword(n) && !n.eq_ignore_ascii_case("devices")
    });
    (first, prop::collection::vec(name(), 0..3))
        .prop_map(|(first, rest)| Path(std::iter::once(first).chain(rest).collect()))
}

fn constant() -> impl Strategy<Value = Constant> {
    prop_oneof![
        Just(Constant::Null),
        any::<bool>().prop_map(Constant::Bool),
        any::<f64>()
            .prop_filter("numbers are finite", |n| n.is_finite())
            .prop_map(Constant::Number),
        (0..1000i32).prop_map(|n| Constant::Number(f64::from(n))),
        any::<String>().prop_map(Constant::String),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        constant().prop_map(Expr::Const),
        path().prop_map(Expr::Path),
        path().prop_map(Expr::IsDefined),
    ];
    leaf.prop_recursive(5, 48, 3, |inner| {
        let boxed = || inner.clone().prop_map(Box::new);
        prop_oneof![
            boxed().prop_map(Expr::Not),
            boxed().prop_map(Expr::Neg),
            (
                prop_oneof![Just(LogicOp::And), Just(LogicOp::Or)],
                boxed(),
                boxed()
            )
                .prop_map(|(op, l, r)| Expr::Logic(op, l, r)),
            (
                prop::sample::select(
                    &[
                        CmpOp::Eq,
                        CmpOp::Ne,
                        CmpOp::Lt,
                        CmpOp::Gt,
                        CmpOp::Le,
                        CmpOp::Ge
                    ][..]
                ),
                boxed(),
                boxed()
            )
                .prop_map(|(op, l, r)| Expr::Compare(op, l, r)),
            (
                prop::sample::select(
                    &[
                        ArithOp::Add,
                        ArithOp::Sub,
                        ArithOp::Mul,
                        ArithOp::Div,
                        ArithOp::Rem
                    ][..]
                ),
                boxed(),
                boxed()
            )
                .prop_map(|(op, l, r)| Expr::Arith(op, l, r)),
            (
                boxed(),
                prop::collection::vec(constant(), 0..4),
                any::<bool>()
            )
                .prop_map(|(expr, list, negated)| Expr::In {
                    expr,
                    list,
                    negated
                }),
        ]
    })
}

fn condition() -> impl Strategy<Value = Condition> {
    prop::option::weighted(0.95, expr()).prop_map(|expr| Condition { expr })
}

fn alias() -> impl Strategy<Value = Option<String>> {
    prop::option::of(name().prop_filter("an alias is not a keyword", |n| !is_keyword(n)))
}

/// `*` or items without COUNT(), and no GROUP BY.
fn plain_query_parts() -> impl Strategy<Value = (Projection, Vec<Path>)> {
    let item = (expr(), alias()).prop_map(|(expr, alias)| Item {
        value: Selected::Expr(expr),
        alias,
    });
    prop_oneof![
        Just(Projection::All),
        prop::collection::vec(item, 1..4).prop_map(Projection::Items),
    ]
    .prop_map(|projection| (projection, Vec::new()))
}

/// GROUP BY paths (maybe none), and items that are COUNT() or one of those paths (so without
/// GROUP BY, only COUNT()s).
fn grouped_query_parts() -> impl Strategy<Value = (Projection, Vec<Path>)> {
    prop::collection::vec(path(), 0..3).prop_flat_map(|group_by| {
        let choices = group_by.len() + 1;
        let item = (0..choices, alias());
        let paths = group_by.clone();
        prop::collection::vec(item, 1..4).prop_map(move |picks| {
            let items = picks
                .into_iter()
                .map(|(pick, alias)| Item {
                    value: paths
                        .get(pick)
                        .map_or(Selected::Count, |p| Selected::Expr(Expr::Path(p.clone()))),
                    alias,
                })
                .collect::<Vec<_>>();
            (Projection::Items(items), paths.clone())
        })
    })
}

fn query() -> impl Strategy<Value = Query> {
    (
        prop::option::of(0..=9_007_199_254_740_992u64),
        prop_oneof![plain_query_parts(), grouped_query_parts()],
        prop_oneof![Just(Source::Devices), Just(Source::DeviceJobs)],
        condition(),
    )
        .prop_map(|(top, (projection, group_by), source, condition)| Query {
            top,
            projection,
            source,
            condition,
            group_by,
        })
}
