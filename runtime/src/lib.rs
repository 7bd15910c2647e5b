//! The llamafile runtime as a library: model loading, the forward pass, sampling and chat templates.

pub mod chat_template;
pub mod sampling;
