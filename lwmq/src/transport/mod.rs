//! Transports: how frames move between sockets (see DESIGN.md, "Layers").

pub mod shm;
