//! Checkpoints: safetensors files named like the lab's PyTorch state dicts.
//!
//! A checkpoint holds every VarStore variable under its module path
//! (`convolutions.0.weight`, …) plus, per BatchNorm layer, the I64 scalar
//! `num_batches_tracked` that PyTorch keeps, so that Python's
//! `model.load_state_dict({k: tensor ...})` accepts it in strict mode. tch's
//! BatchNorm does not count batches; the trainer passes the number of
//! optimiser steps taken before the saved epoch ended (every step runs every
//! BatchNorm once in training mode). Names are sorted so equal weights give
//! equal bytes.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::error::{msg, Result, TchContext};

/// A detached copy of a VarStore's variables (the lab's `deepcopy(model)`).
pub struct Snapshot(Vec<(String, Tensor)>);

impl Snapshot {
    /// Copies every variable (kept on its device: no host transfer per epoch).
    pub fn take(vs: &VarStore) -> Snapshot {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot(named)
    }

    /// Writes the snapshot with `num_batches_tracked = batches` for each of `batch_norms`.
    pub fn save(&self, batch_norms: &[&str], batches: i64, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = self
            .0
            .iter()
            .map(|(n, t)| (n.clone(), t.to_device(Device::Cpu).contiguous()))
            .collect();
        for bn in batch_norms {
            named.push((format!("{bn}.num_batches_tracked"), Tensor::from(batches)));
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Tensor::write_safetensors(&named, path)
            .context(|| format!("{}: cannot write checkpoint", path.display()))
    }

    /// Copies the snapshot back into `vs`.
    pub fn restore(&self, vs: &VarStore) -> Result<()> {
        let mut vars = vs.variables();
        tch::no_grad(|| {
            for (name, value) in &self.0 {
                if let Some(var) = vars.get_mut(name) {
                    var.f_copy_(value)
                        .context(|| format!("restoring `{name}`"))?;
                }
            }
            Ok(())
        })
    }
}

/// Loads `path` into `vs`, requiring every variable with the right shape.
/// `num_batches_tracked` and other extra entries are ignored.
pub fn load(vs: &VarStore, path: &Path, producer: &str) -> Result<()> {
    if !path.is_file() {
        return Err(msg(format!(
            "{}: missing; the upstream `{producer}` stage did not write its weights (rebuild it)",
            path.display()
        )));
    }
    let stored: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .context(|| format!("{}: not a safetensors checkpoint", path.display()))?
        .into_iter()
        .collect();
    let mut vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let Some(var) = vars.get(name) else { continue };
        let Some(value) = stored.get(name) else {
            return Err(msg(format!(
                "{}: no tensor `{name}`; it was not written by `{producer}` for this network \
                 (rebuild the `{producer}` stage)",
                path.display()
            )));
        };
        if value.size() != var.size() || value.kind() != Kind::Float {
            return Err(msg(format!(
                "{}: `{name}` is {:?} {:?}, the network needs F32 {:?}; the checkpoint was made \
                 for another patch size or network (check the stage's `needs`)",
                path.display(),
                value.kind(),
                value.size(),
                var.size()
            )));
        }
    }
    tch::no_grad(|| {
        for (name, var) in vars.iter_mut() {
            if let Some(value) = stored.get(name) {
                var.f_copy_(value)
                    .context(|| format!("{}: loading `{name}`", path.display()))?;
            }
        }
        Ok(())
    })
}
