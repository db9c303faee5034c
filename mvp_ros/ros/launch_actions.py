"""Launch actions the package's launch files share (launch/*.launch.py import them at launch time).

Only launch files import this module: it needs launch and launch_ros, which come with a ROS 2 install
and which no node's process loads.
"""
from __future__ import annotations

from launch.actions import EmitEvent, RegisterEventHandler
from launch.condition import Condition
from launch.events import matches_action
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition


def lifecycle_autostart_actions(node: LifecycleNode, condition: Condition) -> list:
    """Where `condition` holds: ask `node` to configure at launch, and to activate once configured.

    The activation follows the configuring -> inactive transition only, so a node that is later
    deactivated stays inactive. Launch the actions after the node, in the order returned (the handler
    is registered before the configure request goes out).
    """
    activate_once_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive", handle_once=True,
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                              transition_id=Transition.TRANSITION_ACTIVATE))],
    ), condition=condition)
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                            transition_id=Transition.TRANSITION_CONFIGURE), condition=condition)
    return [activate_once_configured, configure]
