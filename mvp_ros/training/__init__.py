"""The training layer, above the learning core (mvp_ros.policy, mvp_ros.rl), the data (mvp_ros.data)
and the simulation (mvp_ros.sim), none of which imports it: `mvp train` (command), its loops
(behaviour_cloning, rl) and the set-up they share (workspace)."""
