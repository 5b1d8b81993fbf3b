//! The lab's networks, built from tch layers with the lab's module names.

pub mod autoencoder;
pub mod cnn;
pub mod layers;

pub use autoencoder::AutoEncoder;
pub use cnn::CustomNetwork;
