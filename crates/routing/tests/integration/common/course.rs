//! The course's manifests (examples/) by file name, in the groups its steps add them.
//! Shared by this crate's tests and the workspace's end-to-end tests (`tests/common`
//! includes this file by path), so that each state of the course is spelled once.

/// ServiceA with its Gateway and VirtualService, ServiceB, and the producer's host:
/// steps 1 and 2 without step 2's route. Every later state of the course starts so.
pub const COURSE_START: [&str; 6] = [
    "serviceA-v1-deployment.yml",
    "serviceA-srv.yml",
    "serviceA-gw.yml",
    "inbound-to-serviceA-vs.yml",
    "service-b-deployment.yml",
    "producer-internal-host.yml",
];

/// ServiceC's Deployment and Service (step 3 on).
pub const SERVICE_C: [&str; 2] = ["service-c-deployment.yml", "service-c-srv.yml"];

/// Step 4's egress: worldtimeapi.org as a ServiceEntry, the egress Gateway, and
/// ServiceC's route through it.
pub const WORLDTIME_EGRESS: [&str; 3] = [
    "worldtime-host-se.yml",
    "worldtime-gw.yml",
    "outbound-srv-c-to-worldtime-vs.yml",
];

/// The files of `groups`, in order.
pub fn course(groups: &[&[&'static str]]) -> Vec<&'static str> {
    groups.concat()
}

/// Steps 1 and 2: ingress -> ServiceA -> ServiceB (`/service-a` answers "Hello from
/// ServiceB!").
pub fn course_a_to_b() -> Vec<&'static str> {
    course(&[&COURSE_START, &["producer-internal-host-vs.yml"]])
}

/// Steps 1 to 3: the producer's traffic split 50/50 between ServiceB and ServiceC.
pub fn course_to_split() -> Vec<&'static str> {
    course(&[
        &COURSE_START,
        &SERVICE_C,
        &["producer-internal-host-50-c-vs.yml"],
    ])
}

/// Step 5 without egress: all of the producer's traffic to ServiceC.
pub fn course_to_c() -> Vec<&'static str> {
    course(&[
        &COURSE_START,
        &SERVICE_C,
        &["producer-internal-host-100-c-vs.yml"],
    ])
}
