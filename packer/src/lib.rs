//! The parts of the packer other tools use: llama.cpp's rules for which type each tensor gets in a
//! quantization mix (`cargo xtask bench` writes seed-shaped models with them).

pub mod quant_mix;
