//! An instance: a restored VM of one function version, and what it is
//! charged against the memory budget (see [`super::budget`]).

use std::sync::Arc;

use wisp_vmm::{Shell, Vm};

use super::budget::{instance_base_bytes, Charge, MemoryBudget};

/// A restored VM and its charge.
pub struct Instance {
    /// Present until [`Instance::into_shell`] takes it.
    vm: Option<Vm>,
    /// What it is charged before writing anything.
    base: u64,
    /// Its guest memory.
    mem_size: u64,
    charge: Charge,
}

impl Instance {
    /// Charges the base cost of a new instance of `mem_size` bytes of guest
    /// memory, or `None` if the budget has no room for it.
    pub fn reserve(budget: &Arc<MemoryBudget>, mem_size: u64) -> Option<Charge> {
        budget.reserve(instance_base_bytes(mem_size))
    }

    /// The instance `vm`, restored under `charge` (from [`Instance::reserve`]).
    pub fn new(vm: Vm, charge: Charge) -> Instance {
        Instance {
            base: charge.bytes(),
            mem_size: vm.mem_size(),
            vm: Some(vm),
            charge,
        }
    }

    /// The VM.
    pub fn vm(&mut self) -> &mut Vm {
        self.vm
            .as_mut()
            .expect("an instance has its VM until into_shell")
    }

    /// Charges all of guest memory for a run, which may touch every page;
    /// false if the budget has no room for that.
    pub fn charge_for_run(&mut self) -> bool {
        self.charge.try_grow(self.base + self.mem_size)
    }

    /// Charges what the idle instance holds: the base and the pages its
    /// invocations wrote, which stay private to it.
    pub fn recharge(&mut self) {
        let held = self.base + self.vm().private_bytes();
        self.charge.set(held);
    }

    /// Gives up the instance, keeping its empty VM for another restore.
    pub fn into_shell(mut self) -> Result<Shell, wisp_vmm::Error> {
        let vm = self
            .vm
            .take()
            .expect("an instance has its VM until into_shell");
        vm.into_shell()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run charges all of guest memory, an idle instance only what it
    /// holds, and a dropped one nothing.
    #[test]
    fn a_run_is_charged_all_of_guest_memory() {
        let budget = MemoryBudget::new(1 << 30);
        let mem_size = 128 << 20;
        let base = instance_base_bytes(mem_size);
        let charge = Instance::reserve(&budget, mem_size).unwrap();
        assert_eq!(budget.used(), base);
        let mut charge_for_run = charge;
        assert!(charge_for_run.try_grow(base + mem_size));
        assert_eq!(budget.used(), base + mem_size);
        drop(charge_for_run);
        assert_eq!(budget.used(), 0);
        // No room for a second running instance of 600 MiB in 1 GiB.
        let mut a = Instance::reserve(&budget, 600 << 20).unwrap();
        let mut b = Instance::reserve(&budget, 600 << 20).unwrap();
        let full = instance_base_bytes(600 << 20) + (600 << 20);
        assert!(a.try_grow(full));
        assert!(!b.try_grow(full));
    }
}
