//! What an output is held to, whichever way it was asked for: a JSON schema (`response_format`,
//! `--json-schema`, a required tool call) or a GBNF grammar (`grammar`, `--grammar`). The
//! generator asks the same four questions of either.

use std::sync::Arc;

use crate::grammar::{Grammar, GrammarState};
use crate::json_schema::{JsonState, Schema};

/// A compiled constraint, shared by every request that uses it.
#[derive(Clone, Debug)]
pub enum Constraint {
    Json(Arc<Schema>),
    Grammar(Arc<Grammar>),
}

/// Where one output stands in its constraint.
#[derive(Clone)]
pub enum ConstraintState {
    Json(JsonState),
    Grammar(GrammarState),
}

impl ConstraintState {
    pub fn new(constraint: Constraint) -> ConstraintState {
        match constraint {
            Constraint::Json(schema) => ConstraintState::Json(JsonState::new(schema)),
            Constraint::Grammar(g) => ConstraintState::Grammar(GrammarState::new(g)),
        }
    }

    /// Whether appending `bytes` keeps the output a prefix of something the constraint accepts.
    pub fn allows(&self, bytes: &[u8]) -> bool {
        match self {
            ConstraintState::Json(s) => s.allows(bytes),
            ConstraintState::Grammar(s) => s.allows(bytes),
        }
    }

    /// Appends `bytes`; false if they do not fit.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        match self {
            ConstraintState::Json(s) => s.feed(bytes),
            ConstraintState::Grammar(s) => s.feed(bytes),
        }
    }

    /// The output is whole and nothing may follow: the reply ends.
    pub fn is_complete(&self) -> bool {
        match self {
            ConstraintState::Json(s) => s.is_complete(),
            ConstraintState::Grammar(s) => s.is_complete(),
        }
    }

    /// The output is whole, so an end-of-generation token may end it.
    pub fn can_end(&self) -> bool {
        match self {
            ConstraintState::Json(s) => s.can_end(),
            ConstraintState::Grammar(s) => s.can_end(),
        }
    }
}
