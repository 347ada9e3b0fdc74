//! The shape check every caller's SQL passes before it is parsed: its size, and how deep the
//! trees built from it can get.
//!
//! The parser refuses deep *nesting* (its recursion limit), but a flat chain — `1+1+…+1`,
//! `a = 0 OR a = 1 OR …`, `'a'||'a'||…`, `x::int::int…`, `SELECT … UNION ALL SELECT …` —
//! is parsed in a loop into a tree as deep as the chain is long. Planning, optimising,
//! evaluating and even dropping that tree recurse once per link, and a few thousand links
//! overflow a thread's stack, which aborts the whole process. So the chain is measured on the
//! token stream (the parser's own tokenizer and dialect), before any tree exists: the operators
//! of one expression, counted along the path of open parentheses, and the query blocks (`SELECT`,
//! `UNION`, `JOIN`, `FROM` list items) of the whole statement, each at most `max_depth`.

use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Bounds on one statement's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeLimits {
    /// Most bytes of SQL text (0: no bound).
    pub max_sql_bytes: usize,
    /// Most operators chained in one expression, and most query blocks in one statement
    /// (0: no bound).
    pub max_depth: usize,
}

/// Why a statement's shape is refused; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error(
        "the statement is {bytes} bytes, more than limits.max_sql_bytes = {limit}; send a \
         shorter statement (a long IN list can often be a join or a range)"
    )]
    TooLong { bytes: usize, limit: usize },
    #[error(
        "an expression chains more than limits.max_expression_depth = {limit} operators (line \
         {line}, column {column}); write long OR chains of equalities as IN (…), or split the \
         statement"
    )]
    TooDeep {
        limit: usize,
        line: u64,
        column: u64,
    },
    #[error(
        "the statement has more than limits.max_expression_depth = {limit} query blocks \
         (SELECT, UNION, JOIN or FROM list items); split it"
    )]
    TooManyBlocks { limit: usize },
}

/// One level of open parentheses (or brackets, or braces).
#[derive(Debug, Default)]
struct Level {
    /// Operators of the current expression at this level (reset by a comma).
    ops: usize,
    /// The sum of `ops` of the enclosing levels when this one opened.
    base: usize,
    /// Whether this level is inside a FROM list (its commas add query blocks).
    in_from: bool,
}

/// Checks `sql`'s size and chain depth before it is parsed. A statement the tokenizer cannot
/// read passes: the parser reports the same error with its position.
pub fn check_shape(
    sql: &str,
    dialect: &dyn Dialect,
    limits: ShapeLimits,
) -> Result<(), ShapeError> {
    if limits.max_sql_bytes > 0 && sql.len() > limits.max_sql_bytes {
        return Err(ShapeError::TooLong {
            bytes: sql.len(),
            limit: limits.max_sql_bytes,
        });
    }
    if limits.max_depth == 0 {
        return Ok(());
    }
    let Ok(tokens) = Tokenizer::new(dialect, sql).tokenize_with_location() else {
        return Ok(());
    };
    let max = limits.max_depth;
    let mut levels = vec![Level::default()];
    let mut blocks = 0usize;
    for t in tokens {
        let Some(level) = levels.last_mut() else {
            break;
        };
        match &t.token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                // A call, a subscript or a parenthesised operand is one more link of the
                // enclosing chain.
                level.ops += 1;
                let base = level.base + level.ops;
                levels.push(Level {
                    base,
                    ..Level::default()
                });
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                if levels.len() > 1 {
                    levels.pop();
                }
            }
            Token::Comma => {
                // Items of a list are separate expressions; FROM list items are joined.
                level.ops = 0;
                if level.in_from {
                    blocks += 1;
                }
            }
            Token::SemiColon => {
                levels.truncate(1);
                if let Some(l) = levels.first_mut() {
                    *l = Level::default();
                }
            }
            Token::Word(w) if w.quote_style.is_none() => match w.keyword {
                Keyword::SELECT
                | Keyword::UNION
                | Keyword::EXCEPT
                | Keyword::INTERSECT
                | Keyword::MINUS
                | Keyword::JOIN
                | Keyword::APPLY => {
                    blocks += 1;
                    level.in_from = false;
                    // A set operator also links the query blocks of one chain.
                    level.ops += usize::from(!matches!(w.keyword, Keyword::SELECT));
                }
                Keyword::FROM => level.in_from = true,
                Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::WINDOW
                | Keyword::QUALIFY
                | Keyword::FETCH => level.in_from = false,
                Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::IN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::DIV
                | Keyword::OVERLAPS
                | Keyword::REGEXP
                | Keyword::RLIKE
                | Keyword::MATCH
                | Keyword::MEMBER
                | Keyword::OPERATOR
                | Keyword::ESCAPE => {
                    level.ops += 1;
                }
                _ => {}
            },
            // Names, literals, placeholders, whitespace and comments are not links; `.` joins
            // the parts of one name.
            Token::Word(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_)
            | Token::Whitespace(_)
            | Token::Period
            | Token::EOF => {}
            // Every other token is an operator.
            _ => level.ops += 1,
        }
        if let Some(level) = levels.last()
            && level.base + level.ops > max
        {
            return Err(ShapeError::TooDeep {
                limit: max,
                line: t.span.start.line,
                column: t.span.start.column,
            });
        }
        if blocks > max {
            return Err(ShapeError::TooManyBlocks { limit: max });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;

    const LIMITS: ShapeLimits = ShapeLimits {
        max_sql_bytes: 1 << 20,
        max_depth: 100,
    };

    fn check(sql: &str) -> Result<(), ShapeError> {
        check_shape(sql, &GenericDialect, LIMITS)
    }

    fn chain(head: &str, link: &str, n: usize) -> String {
        let mut s = head.to_string();
        for _ in 0..n {
            s.push_str(link);
        }
        s
    }

    #[test]
    fn flat_chains_over_the_limit_are_refused_and_lists_are_not_chains() {
        // Each attack shape of the probe, over the limit and at a tenth of it.
        for (head, link) in [
            ("SELECT 1", "+1"),
            ("SELECT * FROM t WHERE value = 0", " OR value = 1"),
            ("SELECT * FROM t WHERE true", " AND true"),
            ("SELECT 'a'", "||'a'"),
            ("SELECT x", "::int"),
            ("SELECT x", " IS NULL"),
            ("SELECT a", "[1]"),
            ("SELECT 1", " UNION ALL SELECT 1"),
            ("SELECT 1, 2", " UNION ALL SELECT 1, 2"),
            ("SELECT * FROM t", " JOIN t USING (a)"),
            ("SELECT * FROM t", ", t"),
            ("WITH a0 AS (SELECT 1)", ", a AS (SELECT * FROM a)"),
        ] {
            let long = chain(head, link, 150);
            let e = check(&long).unwrap_err();
            assert!(
                e.to_string().contains("limits.max_expression_depth = 100"),
                "{head}{link}…: {e}"
            );
            check(&chain(head, link, 10)).unwrap_or_else(|e| panic!("{head}{link}: {e}"));
        }
        // A chain that hides in a nesting of parentheses adds up along the path.
        let nested = format!("SELECT {}", chain("", "(1+1+1+1+1+1+1+1+1+", 20));
        assert!(matches!(check(&nested), Err(ShapeError::TooDeep { .. })));
        // Lists are separate expressions: a long IN list, a wide SELECT, many VALUES rows and a
        // CASE with many branches pass.
        let list = (0..5_000).map(|i| (-i).to_string()).collect::<Vec<_>>();
        check(&format!("SELECT * FROM t WHERE a IN ({})", list.join(", "))).unwrap();
        let columns = (0..2_000).map(|i| format!("a + {i}")).collect::<Vec<_>>();
        check(&format!("SELECT {} FROM t", columns.join(", "))).unwrap();
        let rows = (0..5_000)
            .map(|i| format!("({i}, 'x')"))
            .collect::<Vec<_>>();
        check(&format!("INSERT INTO curated.t VALUES {}", rows.join(", "))).unwrap();
        let case = (0..60)
            .map(|i| format!("WHEN a = {i} THEN 'v{i}'"))
            .collect::<String>();
        check(&format!("SELECT CASE {case} END FROM t")).unwrap();
        // Operators inside strings, quoted names and comments are not operators.
        let quoted = format!(
            "SELECT '{0}', \"{0}\" FROM t -- {0}\n/* {0} */",
            chain("1", "+1", 500)
        );
        check(&quoted).unwrap();
    }

    #[test]
    fn the_size_is_checked_first_and_zero_means_no_bound() {
        let long = "SELECT 1 -- padding\n".repeat(60_000);
        assert!(matches!(
            check(&long),
            Err(ShapeError::TooLong { limit, .. }) if limit == 1 << 20
        ));
        let off = ShapeLimits {
            max_sql_bytes: 0,
            max_depth: 0,
        };
        check_shape(&chain("SELECT 1", "+1", 10_000), &GenericDialect, off).unwrap();
    }
}
