//! CPU and GPU slots of the local machine (and the concurrency cap of any executor).
//!
//! A stage takes `min(cpu, jobs)` CPU slots and its share of the GPUs
//! (`gpu: 0.5` is half a GPU: two such stages share one, e.g. the lab's left
//! and right CNNs). On a
//! machine without GPUs, GPU requests are not slots: those stages run on the
//! CPU (the torch ops fall back by themselves).

use crate::spec::Resources;

pub struct Slots {
    cpu_total: usize,
    cpu_free: usize,
    gpu_total: usize,
    gpu_free: usize,
}

impl Slots {
    pub fn new(jobs: usize, gpus: usize) -> Slots {
        let jobs = jobs.max(1);
        Slots {
            cpu_total: jobs,
            cpu_free: jobs,
            gpu_total: gpus * 1000,
            gpu_free: gpus * 1000,
        }
    }

    fn cpu_need(&self, r: &Resources) -> usize {
        (r.cpu as usize).clamp(1, self.cpu_total)
    }

    fn gpu_need(&self, r: &Resources) -> usize {
        if self.gpu_total == 0 {
            0
        } else {
            (r.gpu_milli as usize).min(self.gpu_total)
        }
    }

    pub fn try_take(&mut self, r: &Resources) -> bool {
        let (c, g) = (self.cpu_need(r), self.gpu_need(r));
        if c <= self.cpu_free && g <= self.gpu_free {
            self.cpu_free -= c;
            self.gpu_free -= g;
            true
        } else {
            false
        }
    }

    /// Whether any stage could start now (every stage takes at least one CPU slot).
    pub fn any_free(&self) -> bool {
        self.cpu_free > 0
    }

    pub fn give_back(&mut self, r: &Resources) {
        self.cpu_free = (self.cpu_free + self.cpu_need(r)).min(self.cpu_total);
        self.gpu_free = (self.gpu_free + self.gpu_need(r)).min(self.gpu_total);
    }

    /// Threads a native op may use: what it asked for, within the run's cap.
    /// (A cmd or a torch op runs with its declared count whatever the cap,
    /// since that count is in its key: `plan::fixed_threads`.)
    pub fn threads_for(&self, r: &Resources) -> usize {
        self.cpu_need(r)
    }
}

/// How many GPUs this machine has (NVIDIA device nodes); no driver call.
pub fn detect_gpus() -> usize {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        let v = v.trim();
        return if v.is_empty() || v == "-1" {
            0
        } else {
            v.split(',').count()
        };
    }
    std::fs::read_dir("/dev")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix("nvidia").is_some_and(|rest| {
                        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit())
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: u32, gpu: u32) -> Resources {
        Resources {
            cpu,
            gpu_milli: gpu * 1000,
            ..Default::default()
        }
    }

    #[test]
    fn half_gpu_stages_share_one_gpu() {
        let mut s = Slots::new(4, 1);
        let half = Resources {
            cpu: 1,
            gpu_milli: 500,
            ..Default::default()
        };
        assert!(s.try_take(&half));
        assert!(s.try_take(&half), "two halves fit one GPU");
        assert!(!s.try_take(&half), "a third waits");
        s.give_back(&half);
        assert!(s.try_take(&half));
    }

    #[test]
    fn gpu_slots_serialise_gpu_stages() {
        let mut s = Slots::new(4, 1);
        assert!(s.try_take(&res(1, 1)));
        assert!(!s.try_take(&res(1, 1)), "second GPU stage must wait");
        assert!(s.try_take(&res(1, 0)));
        s.give_back(&res(1, 1));
        assert!(s.try_take(&res(1, 1)));
    }

    #[test]
    fn big_cpu_requests_are_capped_not_starved() {
        let mut s = Slots::new(2, 0);
        assert!(
            s.try_take(&res(8, 1)),
            "capped to 2, GPU ignored without GPUs"
        );
        assert!(!s.try_take(&res(1, 0)));
    }
}
