"""Tests for ha.auth: authkeys parsing and heartbeat's sha1 / md5 / crc MACs."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import pytest

from ha.auth import (
    MAX_AUTHKEYS_BYTES,
    AuthKeys,
    AuthKeysError,
    AuthMethod,
    crc32_posix,
    load_authkeys,
    parse_authkeys,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "heartbeat"


# --- independent reference implementations (not using ha.auth) ---------------------


def ref_hmac(digest: str, key: bytes, data: bytes) -> str:
    """RFC 2104 HMAC written out with hashlib only."""
    block = 64
    if len(key) > block:
        key = hashlib.new(digest, key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.new(digest, bytes(k ^ 0x36 for k in key) + data).digest()
    return hashlib.new(digest, bytes(k ^ 0x5C for k in key) + inner).hexdigest()


def ref_crc(data: bytes) -> str:
    """Bit-at-a-time CRC-32: poly 0x04C11DB7, init 0, MSB first, final XOR, %lx."""
    reg = 0
    for byte in data:
        for bit in range(7, -1, -1):
            top = (reg >> 31) ^ ((byte >> bit) & 1)
            reg = (reg << 1) & 0xFFFFFFFF
            if top:
                reg ^= 0x04C11DB7
    return "%x" % (reg ^ 0xFFFFFFFF)


# --- the shipped authkeys files ----------------------------------------------------------


def test_parse_sample_files():
    sha1 = parse_authkeys((DATA / "authkeys.sha1").read_bytes(), "authkeys.sha1")
    assert sha1.send_index == 1
    assert list(sha1.methods) == [1]
    assert sha1.methods[1].method == "sha1" and sha1.methods[1].key == b"testkey123"

    md5 = parse_authkeys((DATA / "authkeys.md5").read_text(), "authkeys.md5")
    assert md5.send_index == 2 and md5.send_method.method == "md5" and md5.send_method.key == b"md5secret"

    crc = parse_authkeys((DATA / "authkeys.crc").read_text(), "authkeys.crc")
    assert crc.send_index == 3 and crc.send_method.method == "crc" and crc.send_method.key is None


def test_comments_blank_lines_whitespace_and_several_keys():
    text = "# heartbeat keys\n\n   \t\n  # indented comment\n\t1   sha1\tk1\r\nauth 2\n2 md5 k2\n15 crc\n0 sha1 k0   \n"
    keys = parse_authkeys(text, "/etc/ha.d/authkeys")
    assert keys.send_index == 2
    assert sorted(keys.methods) == [0, 1, 2, 15]
    assert keys.methods[1].key == b"k1"  # CR is whitespace, not part of the key
    assert keys.methods[0].key == b"k0"
    assert keys.methods[15].method == "crc"
    assert keys.path == "/etc/ha.d/authkeys"


def test_key_is_raw_bytes_of_its_token():
    keys = parse_authkeys(b"auth 4\n4 sha1 k\xe9y\xff#x\n", "f")
    assert keys.methods[4].key == b"k\xe9y\xff#x"
    data = b"payload"
    assert keys.methods[4].sign(data) == ref_hmac("sha1", b"k\xe9y\xff#x", data)


def test_key_is_not_repr_visible():
    keys = parse_authkeys("auth 1\n1 sha1 supersecret\n", "f")
    assert "supersecret" not in repr(keys)


# --- errors name the file and the line ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("auth 1\n1 sha2 key\n", 2, "unknown auth method 'sha2'"),
        ("auth 1\n# c\n1 SHA1 key\n", 3, "unknown auth method 'SHA1'"),
        ("auth 1\n16 sha1 key\n", 2, "index 16 not in 0..15"),
        ("auth 1\n1 sha1 key\n99 crc\n", 3, "index 99 not in 0..15"),
        ("auth 16\n16 crc\n", 1, "auth index 16 not in 0..15"),
        ("auth 1\n1 sha1\n", 2, "sha1 needs a key"),
        ("auth 2\n\n2 md5\n", 3, "md5 needs a key"),
        ("auth 3\n3 crc key\n", 2, "crc takes no key"),
        ("auth 1\n1 sha1 two words\n", 2, "text after the key"),
        ("auth 1\n1 sha1 a\n1 md5 b\n", 3, "duplicate index 1 (first on line 2)"),
        ("auth 1\n1 sha1 a\nauth 1\n", 3, "second 'auth' line (first on line 1)"),
        ("auth one\n1 sha1 a\n", 1, "invalid auth index 'one'"),
        ("auth\n1 sha1 a\n", 1, "expected 'auth N'"),
        ("auth 1 2\n1 sha1 a\n", 1, "expected 'auth N'"),
        ("auth 1\nsha1 1 a\n", 2, "invalid line"),
        ("auth 1\n-1 sha1 a\n", 2, "invalid line"),
        ("auth 1\n1\n", 2, "index 1 has no method"),
        ("auth 2\n1 sha1 key\n", 1, "'auth 2' names an index with no key line"),
        ("1 sha1 key\n\nauth 3\n", 3, "'auth 3' names an index with no key line"),
        ("auth 1\n1 sha1 a\0b\n", 2, "NUL"),
    ],
)
def test_errors_name_file_and_line(text, line, fragment):
    with pytest.raises(AuthKeysError) as info:
        parse_authkeys(text, "/etc/ha.d/authkeys")
    err = info.value
    assert err.path == "/etc/ha.d/authkeys"
    assert err.line == line
    assert str(err).startswith(f"/etc/ha.d/authkeys:{line}: ")
    assert fragment in str(err)


def test_missing_auth_line_names_file():
    with pytest.raises(AuthKeysError) as info:
        parse_authkeys("# nothing\n1 sha1 key\n2 crc\n", "keys.txt")
    assert info.value.path == "keys.txt" and info.value.line is None
    assert str(info.value).startswith("keys.txt: ")
    assert "no 'auth N' line" in str(info.value)


def test_empty_file_is_an_error():
    with pytest.raises(AuthKeysError, match="no 'auth N' line"):
        parse_authkeys("", "empty")


def test_auth_line_may_follow_key_lines():
    keys = parse_authkeys("1 sha1 a\n2 md5 b\nauth 2\n", "f")
    assert keys.send_index == 2


# --- load_authkeys: file permissions ---------------------------------------------------------


@pytest.fixture
def keyfile(tmp_path):
    path = tmp_path / "authkeys"
    shutil.copyfile(DATA / "authkeys.sha1", path)
    return path


def test_load_mode_600(keyfile):
    os.chmod(keyfile, 0o600)
    keys = load_authkeys(keyfile)
    assert keys.send_index == 1 and keys.path == str(keyfile)
    os.chmod(keyfile, 0o400)
    assert load_authkeys(str(keyfile)).send_method.key == b"testkey123"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o444])
def test_load_refuses_group_or_other_readable(keyfile, mode):
    os.chmod(keyfile, mode)
    with pytest.raises(AuthKeysError) as info:
        load_authkeys(keyfile)
    assert info.value.path == str(keyfile)
    assert "bad permissions" in str(info.value)
    assert "600 recommended" in str(info.value)
    assert f"{mode:03o}" in str(info.value)


@pytest.mark.parametrize(
    "mode, access",
    [
        (0o620, "writable by group or others (whoever can write it can replace the key)"),
        (0o602, "writable by group or others (whoever can write it can replace the key)"),
        (0o622, "writable by group or others (whoever can write it can replace the key)"),
        (0o611, "executable by group or others"),
        (0o666, "readable and writable by group or others (whoever can write it can replace the key)"),
    ],
)
def test_load_refuses_group_or_other_writable(keyfile, mode, access):
    # heartbeat checks the read bits only; whoever can write the file can replace the key (sshd StrictModes)
    os.chmod(keyfile, mode)
    with pytest.raises(AuthKeysError) as info:
        load_authkeys(keyfile)
    assert str(info.value) == f"{keyfile}: bad permissions {mode:03o}: {access}; mode 600 recommended"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_load_refuses_file_of_another_owner(keyfile):
    os.chmod(keyfile, 0o600)
    os.chown(keyfile, 1001, 1001)
    with pytest.raises(AuthKeysError) as info:
        load_authkeys(keyfile)
    assert str(info.value) == f"{keyfile}: bad owner: uid 1001; it must be owned by root"


def test_load_accepts_own_file(keyfile):
    os.chmod(keyfile, 0o600)
    assert os.stat(keyfile).st_uid == os.geteuid()
    assert load_authkeys(keyfile).send_index == 1


def test_load_refuses_fifo_without_blocking(tmp_path):
    # A FIFO with no writer would block open() forever; it is refused at once.
    path = tmp_path / "authkeys"
    os.mkfifo(path, 0o600)
    with pytest.raises(AuthKeysError) as info:
        load_authkeys(path)
    assert str(info.value) == f"{path}: not a regular file but a FIFO (named pipe)"


def test_load_refuses_device():
    with pytest.raises(AuthKeysError) as info:
        load_authkeys("/dev/zero")
    assert str(info.value) == "/dev/zero: not a regular file but a character device"


def test_load_refuses_oversize_file(tmp_path):
    path = tmp_path / "authkeys"
    path.write_bytes(b"auth 1\n1 sha1 key\n" + b"#" * MAX_AUTHKEYS_BYTES)
    os.chmod(path, 0o600)
    with pytest.raises(AuthKeysError) as info:
        load_authkeys(path)
    assert "too large" in str(info.value) and "the limit is 64 KiB" in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(AuthKeysError) as info:
        load_authkeys(tmp_path / "nope")
    assert "cannot read" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_load_reports_line_of_bad_content(tmp_path):
    path = tmp_path / "authkeys"
    path.write_text("auth 1\n1 sha1 ok\n2 rot13 x\n")
    os.chmod(path, 0o600)
    with pytest.raises(AuthKeysError) as info:
        load_authkeys(path)
    assert str(info.value).startswith(f"{path}:3: ")


# --- MAC vectors ------------------------------------------------------------------------------------


def test_hmac_rfc2202_vectors():
    data = b"what do ya want for nothing?"
    sha1 = AuthMethod(1, "sha1", b"Jefe")
    md5 = AuthMethod(2, "md5", b"Jefe")
    assert sha1.sign(data) == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    assert md5.sign(data) == "750c783e6ab0b503eaa86e310a5db738"
    # RFC 2202 test case 6: key longer than the block size is hashed first
    long_key = b"\xaa" * 80
    big = b"Test Using Larger Than Block-Size Key - Hash Key First"
    assert AuthMethod(1, "sha1", long_key).sign(big) == "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    assert AuthMethod(1, "md5", long_key).sign(big) == "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"


def test_hmac_matches_reference_for_random_inputs():
    rng = random.Random(1)
    for _ in range(50):
        key = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 100)))
        data = rng.randbytes(rng.randrange(0, 400))
        assert AuthMethod(0, "sha1", key).sign(data) == ref_hmac("sha1", key, data)
        assert AuthMethod(0, "md5", key).sign(data) == ref_hmac("md5", key, data)


def test_crc_known_vectors():
    assert crc32_posix(b"123456789") == 0x765E7680  # CRC-32/POSIX check value
    assert crc32_posix(b"") == 0xFFFFFFFF
    crc = AuthMethod(3, "crc")
    assert crc.sign(b"123456789") == "765e7680"
    assert crc.sign(b"") == "ffffffff"


def test_crc_vectors_from_real_heartbeat():
    # the signed parts of two packets heartbeat signed with 'crc' (start-crc.pcap):
    # the second MAC has only 7 hex digits: heartbeat prints %lx, unpadded
    uuid = b"+\r\x93[\xe2cO\xe3\xac\xab\xbaO\xa6Np@"
    common = (
        b"12:(0)src=nodea,27:(1)srcuuid=" + uuid + b",%s14:(0)hg=6b0245d4,14:(0)ts=6b024853,"
        b"28:(0)ld=0.00 0.31 0.50 1/92 27,8:(0)ttl=3,18:(0)auth=3 %s,%%%%%%\n"
    )
    init = b"###\n11:(0)t=status,10:(0)st=init,10:(0)dt=1f40,13:(0)protocol=1," + common % (
        b"8:(0)seq=1,",
        b"d1d1c941",
    )
    up = b"###\n11:(0)t=status,8:(0)st=up,10:(0)dt=1f40,13:(0)protocol=1," + common % (
        b"8:(0)seq=2,",
        b"afe3e501",
    )
    crc = AuthMethod(3, "crc")
    assert crc.sign(init) == "f50f6b03" == ref_crc(init)
    assert crc.sign(up) == "dbb182d" == ref_crc(up)


def test_crc_matches_bitwise_reference():
    rng = random.Random(2)
    for n in list(range(20)) + [rng.randrange(20, 2000) for _ in range(30)]:
        data = rng.randbytes(n)
        assert format(crc32_posix(data), "x") == ref_crc(data)


# --- verify ----------------------------------------------------------------------------------------


def test_verify():
    keys = parse_authkeys("auth 1\n1 sha1 s3cret\n2 md5 other\n3 crc\n", "f")
    data = b"###\nbody%%%\n"
    idx, mac = keys.sign(data)
    assert idx == 1 and mac == ref_hmac("sha1", b"s3cret", data)
    assert keys.verify(1, data, mac)
    assert keys.verify(1, data, mac.encode())
    assert keys.verify(2, data, ref_hmac("md5", b"other", data))
    assert keys.verify(3, data, ref_crc(data))
    assert not keys.verify(1, data + b"x", mac)
    assert not keys.verify(1, data, mac.upper())  # heartbeat compares strings exactly
    assert not keys.verify(1, data, mac[:-1])
    assert not keys.verify(2, data, mac)
    assert not keys.verify(4, data, mac)  # unknown index
    assert not keys.verify(1, data, "é" * 40)
    assert keys.knows(3) and not keys.knows(4)


def test_authmethod_validation():
    with pytest.raises(ValueError):
        AuthMethod(16, "crc")
    with pytest.raises(ValueError):
        AuthMethod(1, "sha1")
    with pytest.raises(ValueError):
        AuthMethod(1, "crc", b"key")
    with pytest.raises(ValueError):
        AuthMethod(1, "sha256", b"key")
    with pytest.raises(ValueError):
        AuthKeys(send_index=2, methods={1: AuthMethod(1, "crc")})


def test_messages_quote_at_most_60_characters():
    with pytest.raises(AuthKeysError) as info:
        parse_authkeys("auth 1\n1 sha1 k\n" + "x" * 50_000 + "\n", "f")
    assert str(info.value) == "f:3: invalid line starting '" + "x" * 60 + "'...: expected 'auth N' or 'N method [key]'"


def test_a_malformed_line_never_shows_its_key():
    """A line missing its index ('sha1 SECRET') is refused naming its first word only."""
    with pytest.raises(AuthKeysError) as info:
        parse_authkeys("auth 1\nsha1 topsecret-key\n", "f")
    assert "topsecret" not in str(info.value) and "'sha1'" in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_load_refuses_a_file_in_a_directory_others_can_write(tmp_path):
    """sshd's StrictModes: whoever can write a directory above the file can put their own key in
    its place. Group/other-writable without the sticky bit, or another owner, is refused, also for
    the directory a symbolic link leads to; a sticky one (/tmp) is fine."""
    shared = tmp_path / "shared"
    shared.mkdir()
    keyfile = shared / "authkeys"
    shutil.copyfile(DATA / "authkeys.sha1", keyfile)
    os.chmod(keyfile, 0o600)
    os.chmod(shared, 0o777)
    with pytest.raises(AuthKeysError) as info:
        load_authkeys(keyfile)
    assert str(info.value) == (
        f"{keyfile}: directory {shared} has mode 777: writable by group or others, who can replace the file; "
        "make it 755 or stricter"
    )
    link = tmp_path / "link"
    link.symlink_to(keyfile)
    with pytest.raises(AuthKeysError, match=f"directory {shared} has mode 777"):
        load_authkeys(link)
    os.chmod(shared, 0o1777)
    assert load_authkeys(keyfile).send_index == 1
    os.chmod(shared, 0o755)
    os.chown(shared, 1001, 1001)
    with pytest.raises(AuthKeysError) as info:
        load_authkeys(keyfile)
    assert (
        str(info.value)
        == f"{keyfile}: directory {shared} is owned by uid 1001, not root: its owner can replace the file"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="a safe directory owned by root needs root")
def test_load_refuses_a_path_through_a_directory_link_others_could_repoint(tmp_path):
    """/open/keys/authkeys with ``keys`` a symbolic link to a safe directory: whoever can write
    ``/open`` can repoint ``keys`` to a directory of theirs, so ``/open`` (on the path as written,
    not on the resolved one) is judged too."""
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o755)
    shutil.copyfile(DATA / "authkeys.sha1", safe / "authkeys")
    os.chmod(safe / "authkeys", 0o600)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    (open_dir / "keys").symlink_to(safe)
    with pytest.raises(AuthKeysError, match=f"directory {open_dir} has mode 777"):
        load_authkeys(open_dir / "keys" / "authkeys")
    assert load_authkeys(safe / "authkeys").send_index == 1
