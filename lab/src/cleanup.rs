//! Removing lab namespaces outside a [`Lab`]'s own teardown: those of labs whose process
//! died, and those of this process when it is interrupted.

use anyhow::Result;

use crate::netns;
#[cfg(doc)]
use crate::{Lab, LabBuilder};

/// Deletes lab namespaces (`bw-<pid>-...`) whose process no longer runs, after killing what
/// still runs inside them, and returns their names. [`LabBuilder::build`] does this itself.
pub fn sweep_stale() -> Result<Vec<String>> {
    netns::sweep_stale()
}

/// Kills what runs in, and deletes, every namespace of every lab of *this* process. Meant for
/// a binary's SIGINT/SIGTERM handling, where the labs' destructors will not run.
pub fn remove_own_namespaces() -> Result<Vec<String>> {
    netns::remove_own()
}
