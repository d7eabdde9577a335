//! Recursive-descent parser: tokens to [`Query`] and [`Condition`].
//!
//! Binding, loosest first: `OR`, `AND`, `NOT`, comparisons and `IN`/`NIN` (not chained),
//! `+ -`, `* / %`, unary `-`, then values, paths, `IS_DEFINED(path)` and parentheses.

use super::ast::{
    ArithOp, CmpOp, Condition, Constant, Expr, Item, LogicOp, Path, Projection, Query, Selected,
    Source,
};
use super::error::{Position, QueryError};
use super::lexer::{tokenize, Tok, Token};

/// Words that cannot start a path. After a `.` any word is a name (`tags.select` is a path).
const KEYWORDS: [&str; 17] = [
    "SELECT",
    "TOP",
    "AS",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "TRUE",
    "FALSE",
    "NULL",
    "IS_DEFINED",
    "COUNT",
];

/// Whether `word` is reserved (in any case).
pub(crate) fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// The largest `TOP n` accepted: every whole number up to it is exact in an f64.
const MAX_TOP: f64 = 9_007_199_254_740_992.0;

/// Parses a full `SELECT` query.
pub(super) fn parse_query(text: &str) -> Result<Query, QueryError> {
    let mut p = Parser::new(text)?;
    p.expect_keyword("SELECT", "SELECT")?;
    let top = if p.eat_keyword("TOP") {
        Some(p.top_count()?)
    } else {
        None
    };
    let (projection, item_positions) = p.projection()?;
    let before_from = match projection {
        Projection::All => "FROM after '*'",
        Projection::Items(_) => "',' or FROM",
    };
    p.expect_keyword("FROM", before_from)?;
    let source = p.source()?;
    let mut after = "WHERE, GROUP BY or end of input";
    let condition = Condition {
        expr: if p.eat_keyword("WHERE") {
            after = "AND, OR, GROUP BY or end of input";
            Some(p.or("a condition after WHERE")?.expr)
        } else {
            None
        },
    };
    let mut group_by = Vec::new();
    if p.eat_keyword("GROUP") {
        p.expect_keyword("BY", "BY after GROUP")?;
        loop {
            group_by.push(p.path("a path after GROUP BY")?);
            if !p.eat_sym(",") {
                break;
            }
        }
        after = "',' or end of input";
    }
    p.expect_end(after)?;
    let mut query = Query {
        top,
        projection,
        source,
        condition,
        group_by,
    };
    if source == Source::DeviceJobs {
        strip_job_prefix(&mut query);
    }
    check_grouping(&query, &item_positions)?;
    Ok(query)
}

/// Parses a job's `queryCondition`: a WHERE clause alone, or `*`.
pub(super) fn parse_condition(text: &str) -> Result<Condition, QueryError> {
    let mut p = Parser::new(text)?;
    if p.eat_sym("*") {
        p.expect_end("end of input after '*'")?;
        return Ok(Condition { expr: None });
    }
    if p.at_keyword("SELECT") {
        return Err(QueryError::Invalid {
            message: "a job's queryCondition is the WHERE part only; found a SELECT query"
                .to_owned(),
            at: p.peek().at,
        });
    }
    let expr = p.or("a condition or *")?.expr;
    p.expect_end("AND, OR or end of input")?;
    Ok(Condition { expr: Some(expr) })
}

/// In a `FROM devices.jobs` query, `devices.jobs.jobId` and `jobId` are the same field.
fn strip_job_prefix(query: &mut Query) {
    let mut strip = |path: &mut Path| {
        let prefixed = path.0.len() > 2
            && path.0[0].eq_ignore_ascii_case("devices")
            && path.0[1].eq_ignore_ascii_case("jobs");
        if prefixed {
            path.0.drain(..2);
        }
    };
    if let Some(expr) = &mut query.condition.expr {
        for_each_path(expr, &mut strip);
    }
    if let Projection::Items(items) = &mut query.projection {
        for item in items {
            if let Selected::Expr(expr) = &mut item.value {
                for_each_path(expr, &mut strip);
            }
        }
    }
    query.group_by.iter_mut().for_each(strip);
}

fn for_each_path(expr: &mut Expr, f: &mut impl FnMut(&mut Path)) {
    match expr {
        Expr::Const(_) => {}
        Expr::Path(p) | Expr::IsDefined(p) => f(p),
        Expr::Not(e) | Expr::Neg(e) | Expr::In { expr: e, .. } => for_each_path(e, f),
        Expr::Logic(_, l, r) | Expr::Compare(_, l, r) | Expr::Arith(_, l, r) => {
            for_each_path(l, f);
            for_each_path(r, f);
        }
    }
}

/// With `GROUP BY` or `COUNT()`, every other item must be one of the grouped paths.
fn check_grouping(query: &Query, item_positions: &[Position]) -> Result<(), QueryError> {
    let Projection::Items(items) = &query.projection else {
        return match item_positions.first() {
            Some(&at) if !query.group_by.is_empty() => Err(QueryError::Invalid {
                message: "SELECT * cannot be grouped; select the GROUP BY paths and COUNT()"
                    .to_owned(),
                at,
            }),
            _ => Ok(()),
        };
    };
    let aggregate = !query.group_by.is_empty() || items.iter().any(|i| i.value == Selected::Count);
    if !aggregate {
        return Ok(());
    }
    for (item, &at) in items.iter().zip(item_positions) {
        if let Selected::Expr(expr) = &item.value {
            let grouped = matches!(expr, Expr::Path(p) if query.group_by.contains(p));
            if !grouped {
                return Err(QueryError::Invalid {
                    message: format!(
                        "'{expr}' is neither COUNT() nor a GROUP BY path, so it has no single value per group"
                    ),
                    at,
                });
            }
        }
    }
    Ok(())
}

/// How deep an expression tree (and the parser's recursion) may go. Evaluating, printing and
/// dropping a tree recurse through it, so this bounds the stack any query can use.
const MAX_DEPTH: usize = 128;

/// An expression being built, with the depth of its tree.
struct Node {
    expr: Expr,
    depth: usize,
}

impl Node {
    fn leaf(expr: Expr) -> Self {
        Node { expr, depth: 1 }
    }
}

struct Parser {
    tokens: Vec<Token>,
    index: usize,
    /// Current recursion through `(`, `NOT` and unary `-`.
    nesting: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Self, QueryError> {
        Ok(Parser {
            tokens: tokenize(text)?,
            index: 0,
            nesting: 0,
        })
    }

    fn peek(&self) -> &Token {
        // `tokenize` always ends with `End`, and `advance` never moves past it.
        &self.tokens[self.index.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.tok != Tok::End {
            self.index += 1;
        }
        token
    }

    fn error(&self, expected: &str) -> QueryError {
        let token = self.peek();
        QueryError::Unexpected {
            expected: expected.to_owned(),
            found: token.tok.describe(),
            at: token.at,
        }
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.at_keyword(keyword);
        if found {
            self.advance();
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str, expected: &str) -> Result<(), QueryError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn at_sym(&self, sym: &str) -> bool {
        matches!(self.peek().tok, Tok::Sym(s) if s == sym)
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        let found = self.at_sym(sym);
        if found {
            self.advance();
        }
        found
    }

    fn expect_sym(&mut self, sym: &str, expected: &str) -> Result<(), QueryError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn expect_end(&self, expected: &str) -> Result<(), QueryError> {
        if self.peek().tok == Tok::End {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    /// A name that is not a keyword (a path's first segment, an alias).
    fn name(&mut self, expected: &str) -> Result<String, QueryError> {
        match &self.peek().tok {
            Tok::Word(w) if !is_keyword(w) => {
                let w = w.clone();
                self.advance();
                Ok(w)
            }
            _ => Err(self.error(expected)),
        }
    }

    fn top_count(&mut self) -> Result<u64, QueryError> {
        let token = self.peek().clone();
        let Tok::Num(n) = token.tok else {
            return Err(self.error("a number after TOP"));
        };
        if n.fract() != 0.0 || n > MAX_TOP {
            return Err(QueryError::Invalid {
                message: format!("TOP needs a whole number from 0 to {MAX_TOP}, found {n}"),
                at: token.at,
            });
        }
        self.advance();
        // Whole, non-negative (the lexer reads no sign) and at most 2^53: the cast is exact.
        Ok(n as u64)
    }

    /// `*` or `item, ...`, with each item's position for later checks.
    fn projection(&mut self) -> Result<(Projection, Vec<Position>), QueryError> {
        let star_at = self.peek().at;
        if self.eat_sym("*") {
            return Ok((Projection::All, vec![star_at]));
        }
        let mut items = Vec::new();
        let mut positions = Vec::new();
        loop {
            positions.push(self.peek().at);
            let value = if self.eat_keyword("COUNT") {
                self.expect_sym("(", "'(' after COUNT")?;
                self.expect_sym(")", "')' after COUNT(")?;
                Selected::Count
            } else {
                Selected::Expr(self.or("*, COUNT() or a value to select")?.expr)
            };
            let alias = if self.eat_keyword("AS") {
                Some(self.name("a name after AS")?)
            } else {
                None
            };
            items.push(Item { value, alias });
            if !self.eat_sym(",") {
                return Ok((Projection::Items(items), positions));
            }
        }
    }

    /// `devices` or `devices.jobs`.
    fn source(&mut self) -> Result<Source, QueryError> {
        let expected = "devices or devices.jobs after FROM";
        if !self.eat_keyword("devices") {
            return Err(self.error(expected));
        }
        if !self.eat_sym(".") {
            return Ok(Source::Devices);
        }
        if self.eat_keyword("jobs") {
            Ok(Source::DeviceJobs)
        } else {
            Err(self.error("jobs after 'devices.'"))
        }
    }

    fn path(&mut self, expected: &str) -> Result<Path, QueryError> {
        let mut segments = vec![self.name(expected)?];
        while self.eat_sym(".") {
            match &self.peek().tok {
                Tok::Word(w) => {
                    segments.push(w.clone());
                    self.advance();
                }
                _ => return Err(self.error("a name after '.'")),
            }
        }
        Ok(Path(segments))
    }

    /// `expected` names what was wanted if no expression starts here.
    fn or(&mut self, expected: &str) -> Result<Node, QueryError> {
        let mut left = self.and(expected)?;
        while self.eat_keyword("OR") {
            let right = self.and("a condition after OR")?;
            left = self.join(left, right, |l, r| Expr::Logic(LogicOp::Or, l, r))?;
        }
        Ok(left)
    }

    fn and(&mut self, expected: &str) -> Result<Node, QueryError> {
        let mut left = self.not(expected)?;
        while self.eat_keyword("AND") {
            let right = self.not("a condition after AND")?;
            left = self.join(left, right, |l, r| Expr::Logic(LogicOp::And, l, r))?;
        }
        Ok(left)
    }

    fn not(&mut self, expected: &str) -> Result<Node, QueryError> {
        if !self.eat_keyword("NOT") {
            return self.comparison(expected);
        }
        self.enter()?;
        let operand = self.not("a condition after NOT")?;
        self.nesting -= 1;
        self.wrap(operand, Expr::Not)
    }

    fn comparison(&mut self, expected: &str) -> Result<Node, QueryError> {
        let left = self.additive(expected)?;
        let (op, sym) = match self.peek().tok {
            Tok::Sym(sym @ "=") => (CmpOp::Eq, sym),
            Tok::Sym(sym @ ("!=" | "<>")) => (CmpOp::Ne, sym),
            Tok::Sym(sym @ "<") => (CmpOp::Lt, sym),
            Tok::Sym(sym @ ">") => (CmpOp::Gt, sym),
            Tok::Sym(sym @ "<=") => (CmpOp::Le, sym),
            Tok::Sym(sym @ ">=") => (CmpOp::Ge, sym),
            _ => {
                let negated = self.at_keyword("NIN");
                if !negated && !self.at_keyword("IN") {
                    return Ok(left);
                }
                let keyword = if negated { "NIN" } else { "IN" };
                self.advance();
                let list = self.array(keyword)?;
                return self.wrap(left, |expr| Expr::In {
                    expr,
                    list,
                    negated,
                });
            }
        };
        self.advance();
        let right = self.additive(&format!("a value after '{sym}'"))?;
        self.join(left, right, |l, r| Expr::Compare(op, l, r))
    }

    fn additive(&mut self, expected: &str) -> Result<Node, QueryError> {
        let mut left = self.multiplicative(expected)?;
        loop {
            let op = match self.peek().tok {
                Tok::Sym("+") => ArithOp::Add,
                Tok::Sym("-") => ArithOp::Sub,
                _ => return Ok(left),
            };
            self.advance();
            let right = self.multiplicative(&format!("a value after '{}'", op.symbol()))?;
            left = self.join(left, right, |l, r| Expr::Arith(op, l, r))?;
        }
    }

    fn multiplicative(&mut self, expected: &str) -> Result<Node, QueryError> {
        let mut left = self.unary(expected)?;
        loop {
            let op = match self.peek().tok {
                Tok::Sym("*") => ArithOp::Mul,
                Tok::Sym("/") => ArithOp::Div,
                Tok::Sym("%") => ArithOp::Rem,
                _ => return Ok(left),
            };
            self.advance();
            let right = self.unary(&format!("a value after '{}'", op.symbol()))?;
            left = self.join(left, right, |l, r| Expr::Arith(op, l, r))?;
        }
    }

    fn unary(&mut self, expected: &str) -> Result<Node, QueryError> {
        if !self.eat_sym("-") {
            return self.primary(expected);
        }
        if let Tok::Num(n) = self.peek().tok {
            self.advance();
            return Ok(Node::leaf(Expr::Const(Constant::Number(-n))));
        }
        self.enter()?;
        let operand = self.unary("a value after '-'")?;
        self.nesting -= 1;
        self.wrap(operand, Expr::Neg)
    }

    fn primary(&mut self, expected: &str) -> Result<Node, QueryError> {
        if let Some(constant) = self.constant() {
            return Ok(Node::leaf(Expr::Const(constant)));
        }
        if self.eat_keyword("IS_DEFINED") {
            self.expect_sym("(", "'(' after IS_DEFINED")?;
            let path = self.path("a path inside IS_DEFINED(...)")?;
            self.expect_sym(")", "')' after the path in IS_DEFINED(...)")?;
            return Ok(Node::leaf(Expr::IsDefined(path)));
        }
        let open = self.peek().at;
        if self.eat_sym("(") {
            self.enter()?;
            let inner = self.or("a condition or value after '('")?;
            self.nesting -= 1;
            self.expect_sym(")", &format!("')' to close the '(' from {open}"))?;
            return Ok(inner);
        }
        Ok(Node::leaf(Expr::Path(self.path(expected)?)))
    }

    /// Counts one more level of parser recursion (`(`, `NOT`, unary `-`), within [`MAX_DEPTH`].
    fn enter(&mut self) -> Result<(), QueryError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    /// A node over one operand, within [`MAX_DEPTH`].
    fn wrap(
        &self,
        operand: Node,
        build: impl FnOnce(Box<Expr>) -> Expr,
    ) -> Result<Node, QueryError> {
        self.checked(Node {
            depth: operand.depth + 1,
            expr: build(Box::new(operand.expr)),
        })
    }

    /// A node over two operands, within [`MAX_DEPTH`].
    fn join(
        &self,
        left: Node,
        right: Node,
        build: impl FnOnce(Box<Expr>, Box<Expr>) -> Expr,
    ) -> Result<Node, QueryError> {
        self.checked(Node {
            depth: left.depth.max(right.depth) + 1,
            expr: build(Box::new(left.expr), Box::new(right.expr)),
        })
    }

    fn checked(&self, node: Node) -> Result<Node, QueryError> {
        if node.depth > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(node)
    }

    fn too_deep(&self) -> QueryError {
        QueryError::Invalid {
            message: format!("the expression nests deeper than {MAX_DEPTH} levels"),
            at: self.peek().at,
        }
    }

    /// A string, number, `true`, `false` or `null` (no sign), if one is next.
    fn constant(&mut self) -> Option<Constant> {
        let constant = match &self.peek().tok {
            Tok::Num(n) => Constant::Number(*n),
            Tok::Str(s) => Constant::String(s.clone()),
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Constant::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Constant::Bool(false),
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => Constant::Null,
            _ => return None,
        };
        self.advance();
        Some(constant)
    }

    /// `[constant, ...]` after `IN` or `NIN`.
    fn array(&mut self, keyword: &str) -> Result<Vec<Constant>, QueryError> {
        self.expect_sym("[", &format!("an array like ['a', 'b'] after {keyword}"))?;
        let mut list = Vec::new();
        if self.eat_sym("]") {
            return Ok(list);
        }
        loop {
            if self.eat_sym("-") {
                let Tok::Num(n) = self.peek().tok else {
                    return Err(self.error("a number after '-'"));
                };
                self.advance();
                list.push(Constant::Number(-n));
            } else {
                let constant = self.constant();
                list.push(
                    constant
                        .ok_or_else(|| self.error(&format!("a constant in the {keyword} array")))?,
                );
            }
            if self.eat_sym("]") {
                return Ok(list);
            }
            self.expect_sym(",", "',' or ']'")?;
        }
    }
}
