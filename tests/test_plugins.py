"""Plugins: loading, hooks, failures, and their place in start-up and shut-down."""

from __future__ import annotations

import pytest
import pytest_twisted

from junebug import plugins
from junebug.manager import ChannelManager
from junebug.plugins import PluginHooks
from junebug.service import JunebugService, StartupError
from tests import plugin_samples
from tests.conftest import make_config
from tests.helpers import free_port


def test_load_names_the_bad_plugin():
    with pytest.raises(plugins.PluginError, match="no.such.Plugin"):
        plugins.load([{"type": "no.such.Plugin"}])
    with pytest.raises(plugins.PluginError, match="is not a junebug.plugin.JunebugPlugin"):
        plugins.load([{"type": "tests.plugin_samples.NotAPlugin"}])
    [(plugin, config)] = plugins.load([{"type": "tests.plugin_samples.RecordingPlugin"}])
    assert isinstance(plugin, plugin_samples.RecordingPlugin)


@pytest_twisted.ensureDeferred
async def test_a_raising_hook_is_logged_and_the_channel_still_runs(gateway, config):
    manager = ChannelManager(
        gateway.backends, hooks=[PluginHooks([plugin_samples.ExplodingPlugin()])]
    )
    port = free_port()
    channel = await manager.create(
        {"type": "telnet", "config": {"twisted_endpoint": f"tcp:{port}:interface=127.0.0.1"}}
    )
    try:
        assert channel.id in manager.running
        with open(f"{config.logging_path}/{channel.id}") as log_file:
            logged = log_file.read()
        assert "ExplodingPlugin.channel_started failed: kaboom" in logged
    finally:
        await manager.stop_all()


@pytest_twisted.ensureDeferred
async def test_plugins_start_before_channels_and_stop_after(tmp_path, key_prefix, redis):
    plugin_samples.CALLS.clear()
    config = make_config(
        tmp_path,
        port=free_port(),
        redis={"host": "127.0.0.1", "port": 6379, "key_prefix": key_prefix},
        plugins=[{"type": "tests.plugin_samples.RecordingPlugin", "name": "first"}],
    )
    service = JunebugService(config)
    await service.start()
    channel = await service.manager.create(
        {"type": "telnet", "config": {"twisted_endpoint": f"tcp:{free_port()}"}}
    )
    await service.stop()
    assert [
        ("start_plugin", "first"),
        ("channel_started", channel.id),
        ("channel_stopped", channel.id),
        ("stop_plugin", None),
    ] == plugin_samples.CALLS

    plugin_samples.CALLS.clear()
    service = JunebugService(config)
    await service.start()  # the channel is restored after the plugin started
    await service.stop()
    assert plugin_samples.CALLS[:2] == [("start_plugin", "first"), ("channel_started", channel.id)]


@pytest_twisted.ensureDeferred
async def test_invalid_plugin_config_stops_start_up_naming_it(tmp_path, key_prefix, redis):
    config = make_config(
        tmp_path,
        port=free_port(),
        redis={"host": "127.0.0.1", "port": 6379, "key_prefix": key_prefix},
        plugins=[{"type": "tests.plugin_samples.PickyPlugin"}],
    )
    service = JunebugService(config)
    with pytest.raises(StartupError, match="PickyPlugin.*needs 'colour'"):
        await service.start()
    await service.stop()


@pytest_twisted.ensureDeferred
async def test_modifying_config_is_announced_to_plugins(gateway):
    plugin_samples.CALLS.clear()
    manager = ChannelManager(
        gateway.backends, hooks=[PluginHooks([plugin_samples.RecordingPlugin()])]
    )
    channel = await manager.create(
        {"type": "telnet", "config": {"twisted_endpoint": f"tcp:{free_port()}"}}
    )
    try:
        await manager.update(channel.id, {"label": "only a label"})
        assert plugin_samples.CALLS == [("channel_started", channel.id)]
        await manager.update(channel.id, {"config": {"twisted_endpoint": f"tcp:{free_port()}"}})
        assert plugin_samples.CALLS[1:] == [
            ("channel_stopped", channel.id),
            ("channel_started", channel.id),
        ]
    finally:
        await manager.stop_all()
