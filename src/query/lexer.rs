//! Turns query text into tokens, each with the line and column where it starts.

use super::error::{Position, QueryError};

/// One token of query text.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// A name or keyword: `[A-Za-z_$][A-Za-z0-9_$]*`. Keywords are recognised by the parser,
    /// case-insensitively, so that `tags.select` stays a path.
    Word(String),
    /// A quoted string, escapes already decoded.
    Str(String),
    /// A decimal or `0x` number (never negative: the parser folds a leading `-`).
    Num(f64),
    /// Punctuation or an operator, as written (`<>` and `!=` stay distinct for messages).
    Sym(&'static str),
    /// The end of the text.
    End,
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub(crate) tok: Tok,
    pub(crate) at: Position,
}

impl Tok {
    /// How the token is named in "found ..." messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("string {}", super::ast::quote(s)),
            Tok::Num(n) => format!("number {n}"),
            Tok::Sym(s) => format!("'{s}'"),
            Tok::End => "end of input".to_owned(),
        }
    }
}

/// Symbols, longest first so that `<=` wins over `<`.
const SYMBOLS: [&str; 18] = [
    "<=", ">=", "<>", "!=", "(", ")", "[", "]", ",", ".", "*", "=", "<", ">", "+", "-", "/", "%",
];

/// Splits `text` into tokens; the last one is always [`Tok::End`].
pub(super) fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        index: 0,
        at: Position { line: 1, column: 1 },
    };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_whitespace();
        let at = lexer.at;
        let Some(c) = lexer.peek(0) else {
            tokens.push(Token { tok: Tok::End, at });
            return Ok(tokens);
        };
        let tok = if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            Tok::Word(lexer.take_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        } else if c.is_ascii_digit() {
            Tok::Num(lexer.number()?)
        } else if c == '\'' || c == '"' {
            Tok::Str(lexer.string(c)?)
        } else if let Some(sym) = SYMBOLS.iter().find(|s| lexer.starts_with(s)) {
            sym.chars().for_each(|_| lexer.bump());
            Tok::Sym(sym)
        } else {
            return Err(unexpected("a name, value, operator or punctuation", c, at));
        };
        tokens.push(Token { tok, at });
    }
}

fn unexpected(expected: &str, found: char, at: Position) -> QueryError {
    QueryError::Unexpected {
        expected: expected.to_owned(),
        found: describe_char(Some(found)),
        at,
    }
}

/// How a character (or the end of the text) is named in "found ..." messages.
fn describe_char(c: Option<char>) -> String {
    c.map_or("end of input".to_owned(), |c| format!("{c:?}"))
}

struct Lexer {
    chars: Vec<char>,
    index: usize,
    at: Position,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.index + ahead).copied()
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(i, c)| self.peek(i) == Some(c))
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek(0) {
            self.index += 1;
            if c == '\n' {
                self.at.line += 1;
                self.at.column = 1;
            } else {
                self.at.column += 1;
            }
        }
    }

    fn skip_whitespace(&mut self) {
        while self.peek(0).is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek(0).filter(|&c| keep(c)) {
            out.push(c);
            self.bump();
        }
        out
    }

    /// A decimal (`12`, `1.5`) or hexadecimal (`0x1F`) number.
    fn number(&mut self) -> Result<f64, QueryError> {
        let at = self.at;
        let value = if self.peek(0) == Some('0') && matches!(self.peek(1), Some('x' | 'X')) {
            self.bump();
            self.bump();
            let digits = self.take_while(|c| c.is_ascii_hexdigit());
            if digits.is_empty() {
                return Err(QueryError::Unexpected {
                    expected: "a hexadecimal digit after '0x'".to_owned(),
                    found: describe_char(self.peek(0)),
                    at: self.at,
                });
            }
            digits
                .chars()
                .filter_map(|c| c.to_digit(16))
                .fold(0.0, |acc, d| acc * 16.0 + f64::from(d))
        } else {
            let mut text = self.take_while(|c| c.is_ascii_digit());
            if self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
                text.push('.');
                text.push_str(&self.take_while(|c| c.is_ascii_digit()));
            }
            // Digits with at most one inner '.' always parse; only the range can fail.
            text.parse::<f64>().unwrap_or(f64::INFINITY)
        };
        if value.is_finite() {
            Ok(value)
        } else {
            Err(QueryError::Invalid {
                message: "number is too large".to_owned(),
                at,
            })
        }
    }

    /// A string opened by `quote`, with `\' \" \\ \uXXXX` escapes.
    fn string(&mut self, quote: char) -> Result<String, QueryError> {
        let start = self.at;
        self.bump();
        let mut out = String::new();
        loop {
            match self.peek(0) {
                None => {
                    return Err(QueryError::Unexpected {
                        expected: format!("a closing {quote} for the string from {start}"),
                        found: "end of input".to_owned(),
                        at: self.at,
                    })
                }
                Some(c) if c == quote => {
                    self.bump();
                    return Ok(out);
                }
                Some('\\') => {
                    self.bump();
                    out.push(self.escape()?);
                }
                Some(c) => {
                    out.push(c);
                    self.bump();
                }
            }
        }
    }

    /// The character after a backslash (the backslash is already consumed).
    fn escape(&mut self) -> Result<char, QueryError> {
        let at = self.at;
        match self.peek(0) {
            Some(c @ ('\'' | '"' | '\\')) => {
                self.bump();
                Ok(c)
            }
            Some('u') => {
                self.bump();
                let high = self.hex4()?;
                if !(0xD800..0xDC00).contains(&high) {
                    return char::from_u32(high).ok_or_else(|| lone_surrogate(at));
                }
                // A high surrogate must be followed by an escaped low surrogate.
                if !self.starts_with("\\u") {
                    return Err(lone_surrogate(at));
                }
                self.bump();
                self.bump();
                let low = self.hex4()?;
                if !(0xDC00..0xE000).contains(&low) {
                    return Err(lone_surrogate(at));
                }
                char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                    .ok_or_else(|| lone_surrogate(at))
            }
            found => Err(QueryError::Unexpected {
                expected: r#"an escape (\' \" \\ or \uXXXX) after '\'"#.to_owned(),
                found: describe_char(found),
                at,
            }),
        }
    }

    fn hex4(&mut self) -> Result<u32, QueryError> {
        let mut value = 0;
        for _ in 0..4 {
            let Some(digit) = self.peek(0).and_then(|c| c.to_digit(16)) else {
                return Err(QueryError::Unexpected {
                    expected: r"four hexadecimal digits after '\u'".to_owned(),
                    found: describe_char(self.peek(0)),
                    at: self.at,
                });
            };
            value = value * 16 + digit;
            self.bump();
        }
        Ok(value)
    }
}

fn lone_surrogate(at: Position) -> QueryError {
    QueryError::Invalid {
        message: r"a \u escape names half of a surrogate pair without its other half".to_owned(),
        at,
    }
}
