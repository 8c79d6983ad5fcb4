"""The recipe of the kernels caskit builds itself (the PR KVM host's): what its cache key covers,
and that a fragment line Kconfig did not keep stops the build by name. The build itself runs in
bootstrap (`--suite`) and is used by tests/integration/test_pr_host.py."""

from __future__ import annotations

from harness.debfetch import Resolved
from harness.emulated import kernel_build as kb

SRC = Resolved("linux-source-6.1", "6.1.192-3", "ab" * 32, "binutils, xz-utils")


def test_the_shipped_pr_fragment_asks_for_pr_kvm_built_in_and_what_a_boot_needs():
    want = kb.wanted_options(kb.fragment("pr"))
    assert want["CONFIG_KVM_BOOK3S_64_PR"] == "y" and want["CONFIG_KVM_XICS"] == "y"
    # Each of these cost a failed boot when allnoconfig turned it off (docs/pr-kvm.md).
    for opt in ("CONFIG_PPC_OF_BOOT_TRAMPOLINE", "CONFIG_RELOCATABLE", "CONFIG_ALTIVEC", "CONFIG_VSX",
                "CONFIG_SECCOMP_FILTER", "CONFIG_PPC_64S_HASH_MMU"):
        assert want[opt] == "y", opt
    assert "CONFIG_MODULES" not in want  # everything built in: the image loads nothing


def test_a_setting_kconfig_dropped_is_named_with_what_the_config_has():
    frag = b"# comment\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_C=8\nCONFIG_D=y\n"
    config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=4\n"
    assert kb.lost_options(frag, config) == [
        "CONFIG_B=y (the .config has n)", "CONFIG_C=8 (the .config has 4)", "CONFIG_D=y (the .config has nothing)"]
    assert kb.lost_options(frag, config + "CONFIG_B=y\nCONFIG_C=8\nCONFIG_D=y\n") == []


def test_the_key_changes_with_source_fragment_and_compiler_and_nothing_else():
    base = kb.recipe_key("pr", SRC, b"CONFIG_A=y\n", "gcc 12.2.0")
    assert base == kb.recipe_key("pr", SRC, b"CONFIG_A=y\n", "gcc 12.2.0")
    others = {
        kb.recipe_key("pr", Resolved(SRC.name, "6.1.193-1", SRC.sha256, ""), b"CONFIG_A=y\n", "gcc 12.2.0"),
        kb.recipe_key("pr", Resolved(SRC.name, SRC.version, "cd" * 32, ""), b"CONFIG_A=y\n", "gcc 12.2.0"),
        kb.recipe_key("pr", SRC, b"CONFIG_A=y\nCONFIG_B=y\n", "gcc 12.2.0"),
        kb.recipe_key("pr", SRC, b"CONFIG_A=y\n", "gcc 12.3.0"),
        kb.recipe_key("other", SRC, b"CONFIG_A=y\n", "gcc 12.2.0"),
    }
    assert base not in others and len(others) == 5


def test_an_unknown_recipe_is_a_kit_error_naming_the_file():
    import pytest
    from harness.errors import KitError
    with pytest.raises(KitError, match=r"no kernel recipe 'nope'.*nope\.config"):
        kb.fragment("nope")


def test_the_image_key_of_other_kinds_does_not_move_with_the_kernel_recipes():
    from harness.emulated import image
    assert not any(name.startswith("kernels/") for name in image._l1_files())
