"""Kernel numbers of netlink, generic netlink and IPVS, named as the kernel's UAPI headers name them.

Numbers only: no code, no imports. Sources:

* ``include/uapi/linux/netlink.h``: ``NETLINK_GENERIC``, message types,
  ``NLM_F_*`` flags, ``NLA_F_*`` attribute type bits, ``NETLINK_CAP_ACK``;
* ``include/linux/socket.h``: ``SOL_NETLINK``;
* ``include/uapi/linux/genetlink.h``: the controller family (``GENL_ID_CTRL``,
  ``CTRL_CMD_*``, ``CTRL_ATTR_*``);
* ``include/uapi/linux/ip_vs.h``: the IPVS family (``IPVS_GENL_*``,
  ``IPVS_CMD_*``, ``IPVS_*_ATTR_*``), connection flags (``IP_VS_CONN_F_*``) and
  sync daemon states (``IP_VS_STATE_*``).

The service flag bits (``IP_VS_SVC_F_*``) and the forwarding method numbers
the configuration speaks of are defined in `director.model`, which this
package's codecs build on (the model cannot import this package: the package
imports the model).
"""

# --- include/uapi/linux/netlink.h, include/linux/socket.h -------------------------------------

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # socket option: error acks without the echoed request

NLMSG_NOOP = 0x1
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
NLMSG_OVERRUN = 0x4
NLMSG_MIN_TYPE = 0x10

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH

NLA_F_NESTED = 1 << 15
NLA_F_NET_BYTEORDER = 1 << 14
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF  # 0x3fff

# --- include/uapi/linux/genetlink.h -------------------------------------------------------------

GENL_ID_CTRL = NLMSG_MIN_TYPE
CTRL_CMD_NEWFAMILY = 1
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1  # u16
CTRL_ATTR_FAMILY_NAME = 2  # NUL-terminated string
#: The version libnl and pyroute2 put in a CTRL_CMD_GETFAMILY request (the controller ignores it).
CTRL_REQUEST_VERSION = 1

# --- include/uapi/linux/ip_vs.h -----------------------------------------------------------------

IPVS_GENL_NAME = "IPVS"
IPVS_GENL_VERSION = 0x1

IPVS_CMD_NEW_SERVICE = 1
IPVS_CMD_SET_SERVICE = 2
IPVS_CMD_DEL_SERVICE = 3
IPVS_CMD_GET_SERVICE = 4
IPVS_CMD_NEW_DEST = 5
IPVS_CMD_SET_DEST = 6
IPVS_CMD_DEL_DEST = 7
IPVS_CMD_GET_DEST = 8
IPVS_CMD_NEW_DAEMON = 9
IPVS_CMD_DEL_DAEMON = 10
IPVS_CMD_GET_DAEMON = 11

IPVS_CMD_ATTR_SERVICE = 1
IPVS_CMD_ATTR_DEST = 2
IPVS_CMD_ATTR_DAEMON = 3

IPVS_SVC_ATTR_AF = 1  # u16
IPVS_SVC_ATTR_PROTOCOL = 2  # u16
IPVS_SVC_ATTR_ADDR = 3  # union nf_inet_addr (16 bytes)
IPVS_SVC_ATTR_PORT = 4  # be16
IPVS_SVC_ATTR_FWMARK = 5  # u32
IPVS_SVC_ATTR_SCHED_NAME = 6  # NUL-terminated string
IPVS_SVC_ATTR_FLAGS = 7  # struct ip_vs_flags: u32 flags, u32 mask
IPVS_SVC_ATTR_TIMEOUT = 8  # u32 seconds
IPVS_SVC_ATTR_NETMASK = 9  # be32 (IPv6: the prefix length, host order)
IPVS_SVC_ATTR_STATS = 10  # nested
IPVS_SVC_ATTR_PE_NAME = 11  # NUL-terminated string
IPVS_SVC_ATTR_STATS64 = 12  # nested

IPVS_DEST_ATTR_ADDR = 1  # union nf_inet_addr (16 bytes)
IPVS_DEST_ATTR_PORT = 2  # be16
IPVS_DEST_ATTR_FWD_METHOD = 3  # u32
IPVS_DEST_ATTR_WEIGHT = 4  # u32
IPVS_DEST_ATTR_U_THRESH = 5  # u32
IPVS_DEST_ATTR_L_THRESH = 6  # u32
IPVS_DEST_ATTR_ACTIVE_CONNS = 7  # u32
IPVS_DEST_ATTR_INACT_CONNS = 8  # u32
IPVS_DEST_ATTR_PERSIST_CONNS = 9  # u32
IPVS_DEST_ATTR_STATS = 10  # nested
IPVS_DEST_ATTR_ADDR_FAMILY = 11  # u16
IPVS_DEST_ATTR_STATS64 = 12  # nested
IPVS_DEST_ATTR_TUN_TYPE = 13  # u8
IPVS_DEST_ATTR_TUN_PORT = 14  # be16
IPVS_DEST_ATTR_TUN_FLAGS = 15  # u16

IPVS_DAEMON_ATTR_STATE = 1  # u32: IP_VS_STATE_MASTER or IP_VS_STATE_BACKUP
IPVS_DAEMON_ATTR_MCAST_IFN = 2  # NUL-terminated interface name
IPVS_DAEMON_ATTR_SYNC_ID = 3  # u32

# Inside IPVS_SVC_ATTR_STATS64 / IPVS_DEST_ATTR_STATS64 every value is a u64
# (``ip_vs_genl_fill_stats64``); inside the older IPVS_*_ATTR_STATS the counts of
# connections and packets and the rates are u32, the byte counts u64
# (``ip_vs_genl_fill_stats``). Rates are per second, from the kernel's estimator.
IPVS_STATS_ATTR_CONNS = 1  # connections scheduled
IPVS_STATS_ATTR_INPKTS = 2  # incoming packets
IPVS_STATS_ATTR_OUTPKTS = 3  # outgoing packets
IPVS_STATS_ATTR_INBYTES = 4  # incoming bytes
IPVS_STATS_ATTR_OUTBYTES = 5  # outgoing bytes
IPVS_STATS_ATTR_CPS = 6  # current connection rate
IPVS_STATS_ATTR_INPPS = 7  # current incoming packet rate
IPVS_STATS_ATTR_OUTPPS = 8  # current outgoing packet rate
IPVS_STATS_ATTR_INBPS = 9  # current incoming byte rate
IPVS_STATS_ATTR_OUTBPS = 10  # current outgoing byte rate
IPVS_STATS_ATTR_PAD = 11  # alignment padding of the u64 attributes

#: Forwarding method bits of IPVS_DEST_ATTR_FWD_METHOD (the rest are other connection flags).
IP_VS_CONN_F_FWD_MASK = 0x0007

IP_VS_STATE_MASTER = 0x0001
IP_VS_STATE_BACKUP = 0x0002
