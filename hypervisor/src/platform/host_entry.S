// Host-mode entry points (assembled through global_asm! in exceptions.rs).
//
// nexus_vector_N: one stub per IDT vector, each 16-byte aligned at nexus_vector_0 + 16 * N
// (exceptions.rs computes the IDT from that and checks it against nexus_vector_255).
// Vectors without a CPU-pushed error code push 0 so every frame has the same shape; then the vector number is pushed and all stubs continue in
// nexus_exception_common, which saves the GPRs and calls nexus_host_exception(frame) (never
// returns). Vectors with an error code: 8, 10-14, 17, 21, 29, 30.
//
// nexus_switch_stack(top, entry, arg): continue on another stack, calling entry(arg) (which
// never returns).
//
// Both use the System V calling convention (arguments in rdi, rsi, rdx); the Rust sides
// declare them `extern "sysv64"`, since the UEFI target's `extern "C"` is the Microsoft one.

.section .text

.global nexus_exception_common
nexus_exception_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    and rsp, -16
    cld
    call nexus_host_exception
1:  cli
    hlt
    jmp 1b

.global nexus_switch_stack
nexus_switch_stack:
    mov rsp, rdi
    and rsp, -16
    mov rdi, rdx
    xor ebp, ebp
    call rsi
2:  cli
    hlt
    jmp 2b

.balign 16
.global nexus_vector_0
nexus_vector_0:
    push 0
    push 0
    jmp nexus_exception_common
.balign 16
.global nexus_vector_1
nexus_vector_1:
    push 0
    push 1
    jmp nexus_exception_common
.balign 16
.global nexus_vector_2
nexus_vector_2:
    push 0
    push 2
    jmp nexus_exception_common
.balign 16
.global nexus_vector_3
nexus_vector_3:
    push 0
    push 3
    jmp nexus_exception_common
.balign 16
.global nexus_vector_4
nexus_vector_4:
    push 0
    push 4
    jmp nexus_exception_common
.balign 16
.global nexus_vector_5
nexus_vector_5:
    push 0
    push 5
    jmp nexus_exception_common
.balign 16
.global nexus_vector_6
nexus_vector_6:
    push 0
    push 6
    jmp nexus_exception_common
.balign 16
.global nexus_vector_7
nexus_vector_7:
    push 0
    push 7
    jmp nexus_exception_common
.balign 16
.global nexus_vector_8
nexus_vector_8:
    push 8
    jmp nexus_exception_common
.balign 16
.global nexus_vector_9
nexus_vector_9:
    push 0
    push 9
    jmp nexus_exception_common
.balign 16
.global nexus_vector_10
nexus_vector_10:
    push 10
    jmp nexus_exception_common
.balign 16
.global nexus_vector_11
nexus_vector_11:
    push 11
    jmp nexus_exception_common
.balign 16
.global nexus_vector_12
nexus_vector_12:
    push 12
    jmp nexus_exception_common
.balign 16
.global nexus_vector_13
nexus_vector_13:
    push 13
    jmp nexus_exception_common
.balign 16
.global nexus_vector_14
nexus_vector_14:
    push 14
    jmp nexus_exception_common
.balign 16
.global nexus_vector_15
nexus_vector_15:
    push 0
    push 15
    jmp nexus_exception_common
.balign 16
.global nexus_vector_16
nexus_vector_16:
    push 0
    push 16
    jmp nexus_exception_common
.balign 16
.global nexus_vector_17
nexus_vector_17:
    push 17
    jmp nexus_exception_common
.balign 16
.global nexus_vector_18
nexus_vector_18:
    push 0
    push 18
    jmp nexus_exception_common
.balign 16
.global nexus_vector_19
nexus_vector_19:
    push 0
    push 19
    jmp nexus_exception_common
.balign 16
.global nexus_vector_20
nexus_vector_20:
    push 0
    push 20
    jmp nexus_exception_common
.balign 16
.global nexus_vector_21
nexus_vector_21:
    push 21
    jmp nexus_exception_common
.balign 16
.global nexus_vector_22
nexus_vector_22:
    push 0
    push 22
    jmp nexus_exception_common
.balign 16
.global nexus_vector_23
nexus_vector_23:
    push 0
    push 23
    jmp nexus_exception_common
.balign 16
.global nexus_vector_24
nexus_vector_24:
    push 0
    push 24
    jmp nexus_exception_common
.balign 16
.global nexus_vector_25
nexus_vector_25:
    push 0
    push 25
    jmp nexus_exception_common
.balign 16
.global nexus_vector_26
nexus_vector_26:
    push 0
    push 26
    jmp nexus_exception_common
.balign 16
.global nexus_vector_27
nexus_vector_27:
    push 0
    push 27
    jmp nexus_exception_common
.balign 16
.global nexus_vector_28
nexus_vector_28:
    push 0
    push 28
    jmp nexus_exception_common
.balign 16
.global nexus_vector_29
nexus_vector_29:
    push 29
    jmp nexus_exception_common
.balign 16
.global nexus_vector_30
nexus_vector_30:
    push 30
    jmp nexus_exception_common
.balign 16
.global nexus_vector_31
nexus_vector_31:
    push 0
    push 31
    jmp nexus_exception_common
.balign 16
.global nexus_vector_32
nexus_vector_32:
    push 0
    push 32
    jmp nexus_exception_common
.balign 16
.global nexus_vector_33
nexus_vector_33:
    push 0
    push 33
    jmp nexus_exception_common
.balign 16
.global nexus_vector_34
nexus_vector_34:
    push 0
    push 34
    jmp nexus_exception_common
.balign 16
.global nexus_vector_35
nexus_vector_35:
    push 0
    push 35
    jmp nexus_exception_common
.balign 16
.global nexus_vector_36
nexus_vector_36:
    push 0
    push 36
    jmp nexus_exception_common
.balign 16
.global nexus_vector_37
nexus_vector_37:
    push 0
    push 37
    jmp nexus_exception_common
.balign 16
.global nexus_vector_38
nexus_vector_38:
    push 0
    push 38
    jmp nexus_exception_common
.balign 16
.global nexus_vector_39
nexus_vector_39:
    push 0
    push 39
    jmp nexus_exception_common
.balign 16
.global nexus_vector_40
nexus_vector_40:
    push 0
    push 40
    jmp nexus_exception_common
.balign 16
.global nexus_vector_41
nexus_vector_41:
    push 0
    push 41
    jmp nexus_exception_common
.balign 16
.global nexus_vector_42
nexus_vector_42:
    push 0
    push 42
    jmp nexus_exception_common
.balign 16
.global nexus_vector_43
nexus_vector_43:
    push 0
    push 43
    jmp nexus_exception_common
.balign 16
.global nexus_vector_44
nexus_vector_44:
    push 0
    push 44
    jmp nexus_exception_common
.balign 16
.global nexus_vector_45
nexus_vector_45:
    push 0
    push 45
    jmp nexus_exception_common
.balign 16
.global nexus_vector_46
nexus_vector_46:
    push 0
    push 46
    jmp nexus_exception_common
.balign 16
.global nexus_vector_47
nexus_vector_47:
    push 0
    push 47
    jmp nexus_exception_common
.balign 16
.global nexus_vector_48
nexus_vector_48:
    push 0
    push 48
    jmp nexus_exception_common
.balign 16
.global nexus_vector_49
nexus_vector_49:
    push 0
    push 49
    jmp nexus_exception_common
.balign 16
.global nexus_vector_50
nexus_vector_50:
    push 0
    push 50
    jmp nexus_exception_common
.balign 16
.global nexus_vector_51
nexus_vector_51:
    push 0
    push 51
    jmp nexus_exception_common
.balign 16
.global nexus_vector_52
nexus_vector_52:
    push 0
    push 52
    jmp nexus_exception_common
.balign 16
.global nexus_vector_53
nexus_vector_53:
    push 0
    push 53
    jmp nexus_exception_common
.balign 16
.global nexus_vector_54
nexus_vector_54:
    push 0
    push 54
    jmp nexus_exception_common
.balign 16
.global nexus_vector_55
nexus_vector_55:
    push 0
    push 55
    jmp nexus_exception_common
.balign 16
.global nexus_vector_56
nexus_vector_56:
    push 0
    push 56
    jmp nexus_exception_common
.balign 16
.global nexus_vector_57
nexus_vector_57:
    push 0
    push 57
    jmp nexus_exception_common
.balign 16
.global nexus_vector_58
nexus_vector_58:
    push 0
    push 58
    jmp nexus_exception_common
.balign 16
.global nexus_vector_59
nexus_vector_59:
    push 0
    push 59
    jmp nexus_exception_common
.balign 16
.global nexus_vector_60
nexus_vector_60:
    push 0
    push 60
    jmp nexus_exception_common
.balign 16
.global nexus_vector_61
nexus_vector_61:
    push 0
    push 61
    jmp nexus_exception_common
.balign 16
.global nexus_vector_62
nexus_vector_62:
    push 0
    push 62
    jmp nexus_exception_common
.balign 16
.global nexus_vector_63
nexus_vector_63:
    push 0
    push 63
    jmp nexus_exception_common
.balign 16
.global nexus_vector_64
nexus_vector_64:
    push 0
    push 64
    jmp nexus_exception_common
.balign 16
.global nexus_vector_65
nexus_vector_65:
    push 0
    push 65
    jmp nexus_exception_common
.balign 16
.global nexus_vector_66
nexus_vector_66:
    push 0
    push 66
    jmp nexus_exception_common
.balign 16
.global nexus_vector_67
nexus_vector_67:
    push 0
    push 67
    jmp nexus_exception_common
.balign 16
.global nexus_vector_68
nexus_vector_68:
    push 0
    push 68
    jmp nexus_exception_common
.balign 16
.global nexus_vector_69
nexus_vector_69:
    push 0
    push 69
    jmp nexus_exception_common
.balign 16
.global nexus_vector_70
nexus_vector_70:
    push 0
    push 70
    jmp nexus_exception_common
.balign 16
.global nexus_vector_71
nexus_vector_71:
    push 0
    push 71
    jmp nexus_exception_common
.balign 16
.global nexus_vector_72
nexus_vector_72:
    push 0
    push 72
    jmp nexus_exception_common
.balign 16
.global nexus_vector_73
nexus_vector_73:
    push 0
    push 73
    jmp nexus_exception_common
.balign 16
.global nexus_vector_74
nexus_vector_74:
    push 0
    push 74
    jmp nexus_exception_common
.balign 16
.global nexus_vector_75
nexus_vector_75:
    push 0
    push 75
    jmp nexus_exception_common
.balign 16
.global nexus_vector_76
nexus_vector_76:
    push 0
    push 76
    jmp nexus_exception_common
.balign 16
.global nexus_vector_77
nexus_vector_77:
    push 0
    push 77
    jmp nexus_exception_common
.balign 16
.global nexus_vector_78
nexus_vector_78:
    push 0
    push 78
    jmp nexus_exception_common
.balign 16
.global nexus_vector_79
nexus_vector_79:
    push 0
    push 79
    jmp nexus_exception_common
.balign 16
.global nexus_vector_80
nexus_vector_80:
    push 0
    push 80
    jmp nexus_exception_common
.balign 16
.global nexus_vector_81
nexus_vector_81:
    push 0
    push 81
    jmp nexus_exception_common
.balign 16
.global nexus_vector_82
nexus_vector_82:
    push 0
    push 82
    jmp nexus_exception_common
.balign 16
.global nexus_vector_83
nexus_vector_83:
    push 0
    push 83
    jmp nexus_exception_common
.balign 16
.global nexus_vector_84
nexus_vector_84:
    push 0
    push 84
    jmp nexus_exception_common
.balign 16
.global nexus_vector_85
nexus_vector_85:
    push 0
    push 85
    jmp nexus_exception_common
.balign 16
.global nexus_vector_86
nexus_vector_86:
    push 0
    push 86
    jmp nexus_exception_common
.balign 16
.global nexus_vector_87
nexus_vector_87:
    push 0
    push 87
    jmp nexus_exception_common
.balign 16
.global nexus_vector_88
nexus_vector_88:
    push 0
    push 88
    jmp nexus_exception_common
.balign 16
.global nexus_vector_89
nexus_vector_89:
    push 0
    push 89
    jmp nexus_exception_common
.balign 16
.global nexus_vector_90
nexus_vector_90:
    push 0
    push 90
    jmp nexus_exception_common
.balign 16
.global nexus_vector_91
nexus_vector_91:
    push 0
    push 91
    jmp nexus_exception_common
.balign 16
.global nexus_vector_92
nexus_vector_92:
    push 0
    push 92
    jmp nexus_exception_common
.balign 16
.global nexus_vector_93
nexus_vector_93:
    push 0
    push 93
    jmp nexus_exception_common
.balign 16
.global nexus_vector_94
nexus_vector_94:
    push 0
    push 94
    jmp nexus_exception_common
.balign 16
.global nexus_vector_95
nexus_vector_95:
    push 0
    push 95
    jmp nexus_exception_common
.balign 16
.global nexus_vector_96
nexus_vector_96:
    push 0
    push 96
    jmp nexus_exception_common
.balign 16
.global nexus_vector_97
nexus_vector_97:
    push 0
    push 97
    jmp nexus_exception_common
.balign 16
.global nexus_vector_98
nexus_vector_98:
    push 0
    push 98
    jmp nexus_exception_common
.balign 16
.global nexus_vector_99
nexus_vector_99:
    push 0
    push 99
    jmp nexus_exception_common
.balign 16
.global nexus_vector_100
nexus_vector_100:
    push 0
    push 100
    jmp nexus_exception_common
.balign 16
.global nexus_vector_101
nexus_vector_101:
    push 0
    push 101
    jmp nexus_exception_common
.balign 16
.global nexus_vector_102
nexus_vector_102:
    push 0
    push 102
    jmp nexus_exception_common
.balign 16
.global nexus_vector_103
nexus_vector_103:
    push 0
    push 103
    jmp nexus_exception_common
.balign 16
.global nexus_vector_104
nexus_vector_104:
    push 0
    push 104
    jmp nexus_exception_common
.balign 16
.global nexus_vector_105
nexus_vector_105:
    push 0
    push 105
    jmp nexus_exception_common
.balign 16
.global nexus_vector_106
nexus_vector_106:
    push 0
    push 106
    jmp nexus_exception_common
.balign 16
.global nexus_vector_107
nexus_vector_107:
    push 0
    push 107
    jmp nexus_exception_common
.balign 16
.global nexus_vector_108
nexus_vector_108:
    push 0
    push 108
    jmp nexus_exception_common
.balign 16
.global nexus_vector_109
nexus_vector_109:
    push 0
    push 109
    jmp nexus_exception_common
.balign 16
.global nexus_vector_110
nexus_vector_110:
    push 0
    push 110
    jmp nexus_exception_common
.balign 16
.global nexus_vector_111
nexus_vector_111:
    push 0
    push 111
    jmp nexus_exception_common
.balign 16
.global nexus_vector_112
nexus_vector_112:
    push 0
    push 112
    jmp nexus_exception_common
.balign 16
.global nexus_vector_113
nexus_vector_113:
    push 0
    push 113
    jmp nexus_exception_common
.balign 16
.global nexus_vector_114
nexus_vector_114:
    push 0
    push 114
    jmp nexus_exception_common
.balign 16
.global nexus_vector_115
nexus_vector_115:
    push 0
    push 115
    jmp nexus_exception_common
.balign 16
.global nexus_vector_116
nexus_vector_116:
    push 0
    push 116
    jmp nexus_exception_common
.balign 16
.global nexus_vector_117
nexus_vector_117:
    push 0
    push 117
    jmp nexus_exception_common
.balign 16
.global nexus_vector_118
nexus_vector_118:
    push 0
    push 118
    jmp nexus_exception_common
.balign 16
.global nexus_vector_119
nexus_vector_119:
    push 0
    push 119
    jmp nexus_exception_common
.balign 16
.global nexus_vector_120
nexus_vector_120:
    push 0
    push 120
    jmp nexus_exception_common
.balign 16
.global nexus_vector_121
nexus_vector_121:
    push 0
    push 121
    jmp nexus_exception_common
.balign 16
.global nexus_vector_122
nexus_vector_122:
    push 0
    push 122
    jmp nexus_exception_common
.balign 16
.global nexus_vector_123
nexus_vector_123:
    push 0
    push 123
    jmp nexus_exception_common
.balign 16
.global nexus_vector_124
nexus_vector_124:
    push 0
    push 124
    jmp nexus_exception_common
.balign 16
.global nexus_vector_125
nexus_vector_125:
    push 0
    push 125
    jmp nexus_exception_common
.balign 16
.global nexus_vector_126
nexus_vector_126:
    push 0
    push 126
    jmp nexus_exception_common
.balign 16
.global nexus_vector_127
nexus_vector_127:
    push 0
    push 127
    jmp nexus_exception_common
.balign 16
.global nexus_vector_128
nexus_vector_128:
    push 0
    push 128
    jmp nexus_exception_common
.balign 16
.global nexus_vector_129
nexus_vector_129:
    push 0
    push 129
    jmp nexus_exception_common
.balign 16
.global nexus_vector_130
nexus_vector_130:
    push 0
    push 130
    jmp nexus_exception_common
.balign 16
.global nexus_vector_131
nexus_vector_131:
    push 0
    push 131
    jmp nexus_exception_common
.balign 16
.global nexus_vector_132
nexus_vector_132:
    push 0
    push 132
    jmp nexus_exception_common
.balign 16
.global nexus_vector_133
nexus_vector_133:
    push 0
    push 133
    jmp nexus_exception_common
.balign 16
.global nexus_vector_134
nexus_vector_134:
    push 0
    push 134
    jmp nexus_exception_common
.balign 16
.global nexus_vector_135
nexus_vector_135:
    push 0
    push 135
    jmp nexus_exception_common
.balign 16
.global nexus_vector_136
nexus_vector_136:
    push 0
    push 136
    jmp nexus_exception_common
.balign 16
.global nexus_vector_137
nexus_vector_137:
    push 0
    push 137
    jmp nexus_exception_common
.balign 16
.global nexus_vector_138
nexus_vector_138:
    push 0
    push 138
    jmp nexus_exception_common
.balign 16
.global nexus_vector_139
nexus_vector_139:
    push 0
    push 139
    jmp nexus_exception_common
.balign 16
.global nexus_vector_140
nexus_vector_140:
    push 0
    push 140
    jmp nexus_exception_common
.balign 16
.global nexus_vector_141
nexus_vector_141:
    push 0
    push 141
    jmp nexus_exception_common
.balign 16
.global nexus_vector_142
nexus_vector_142:
    push 0
    push 142
    jmp nexus_exception_common
.balign 16
.global nexus_vector_143
nexus_vector_143:
    push 0
    push 143
    jmp nexus_exception_common
.balign 16
.global nexus_vector_144
nexus_vector_144:
    push 0
    push 144
    jmp nexus_exception_common
.balign 16
.global nexus_vector_145
nexus_vector_145:
    push 0
    push 145
    jmp nexus_exception_common
.balign 16
.global nexus_vector_146
nexus_vector_146:
    push 0
    push 146
    jmp nexus_exception_common
.balign 16
.global nexus_vector_147
nexus_vector_147:
    push 0
    push 147
    jmp nexus_exception_common
.balign 16
.global nexus_vector_148
nexus_vector_148:
    push 0
    push 148
    jmp nexus_exception_common
.balign 16
.global nexus_vector_149
nexus_vector_149:
    push 0
    push 149
    jmp nexus_exception_common
.balign 16
.global nexus_vector_150
nexus_vector_150:
    push 0
    push 150
    jmp nexus_exception_common
.balign 16
.global nexus_vector_151
nexus_vector_151:
    push 0
    push 151
    jmp nexus_exception_common
.balign 16
.global nexus_vector_152
nexus_vector_152:
    push 0
    push 152
    jmp nexus_exception_common
.balign 16
.global nexus_vector_153
nexus_vector_153:
    push 0
    push 153
    jmp nexus_exception_common
.balign 16
.global nexus_vector_154
nexus_vector_154:
    push 0
    push 154
    jmp nexus_exception_common
.balign 16
.global nexus_vector_155
nexus_vector_155:
    push 0
    push 155
    jmp nexus_exception_common
.balign 16
.global nexus_vector_156
nexus_vector_156:
    push 0
    push 156
    jmp nexus_exception_common
.balign 16
.global nexus_vector_157
nexus_vector_157:
    push 0
    push 157
    jmp nexus_exception_common
.balign 16
.global nexus_vector_158
nexus_vector_158:
    push 0
    push 158
    jmp nexus_exception_common
.balign 16
.global nexus_vector_159
nexus_vector_159:
    push 0
    push 159
    jmp nexus_exception_common
.balign 16
.global nexus_vector_160
nexus_vector_160:
    push 0
    push 160
    jmp nexus_exception_common
.balign 16
.global nexus_vector_161
nexus_vector_161:
    push 0
    push 161
    jmp nexus_exception_common
.balign 16
.global nexus_vector_162
nexus_vector_162:
    push 0
    push 162
    jmp nexus_exception_common
.balign 16
.global nexus_vector_163
nexus_vector_163:
    push 0
    push 163
    jmp nexus_exception_common
.balign 16
.global nexus_vector_164
nexus_vector_164:
    push 0
    push 164
    jmp nexus_exception_common
.balign 16
.global nexus_vector_165
nexus_vector_165:
    push 0
    push 165
    jmp nexus_exception_common
.balign 16
.global nexus_vector_166
nexus_vector_166:
    push 0
    push 166
    jmp nexus_exception_common
.balign 16
.global nexus_vector_167
nexus_vector_167:
    push 0
    push 167
    jmp nexus_exception_common
.balign 16
.global nexus_vector_168
nexus_vector_168:
    push 0
    push 168
    jmp nexus_exception_common
.balign 16
.global nexus_vector_169
nexus_vector_169:
    push 0
    push 169
    jmp nexus_exception_common
.balign 16
.global nexus_vector_170
nexus_vector_170:
    push 0
    push 170
    jmp nexus_exception_common
.balign 16
.global nexus_vector_171
nexus_vector_171:
    push 0
    push 171
    jmp nexus_exception_common
.balign 16
.global nexus_vector_172
nexus_vector_172:
    push 0
    push 172
    jmp nexus_exception_common
.balign 16
.global nexus_vector_173
nexus_vector_173:
    push 0
    push 173
    jmp nexus_exception_common
.balign 16
.global nexus_vector_174
nexus_vector_174:
    push 0
    push 174
    jmp nexus_exception_common
.balign 16
.global nexus_vector_175
nexus_vector_175:
    push 0
    push 175
    jmp nexus_exception_common
.balign 16
.global nexus_vector_176
nexus_vector_176:
    push 0
    push 176
    jmp nexus_exception_common
.balign 16
.global nexus_vector_177
nexus_vector_177:
    push 0
    push 177
    jmp nexus_exception_common
.balign 16
.global nexus_vector_178
nexus_vector_178:
    push 0
    push 178
    jmp nexus_exception_common
.balign 16
.global nexus_vector_179
nexus_vector_179:
    push 0
    push 179
    jmp nexus_exception_common
.balign 16
.global nexus_vector_180
nexus_vector_180:
    push 0
    push 180
    jmp nexus_exception_common
.balign 16
.global nexus_vector_181
nexus_vector_181:
    push 0
    push 181
    jmp nexus_exception_common
.balign 16
.global nexus_vector_182
nexus_vector_182:
    push 0
    push 182
    jmp nexus_exception_common
.balign 16
.global nexus_vector_183
nexus_vector_183:
    push 0
    push 183
    jmp nexus_exception_common
.balign 16
.global nexus_vector_184
nexus_vector_184:
    push 0
    push 184
    jmp nexus_exception_common
.balign 16
.global nexus_vector_185
nexus_vector_185:
    push 0
    push 185
    jmp nexus_exception_common
.balign 16
.global nexus_vector_186
nexus_vector_186:
    push 0
    push 186
    jmp nexus_exception_common
.balign 16
.global nexus_vector_187
nexus_vector_187:
    push 0
    push 187
    jmp nexus_exception_common
.balign 16
.global nexus_vector_188
nexus_vector_188:
    push 0
    push 188
    jmp nexus_exception_common
.balign 16
.global nexus_vector_189
nexus_vector_189:
    push 0
    push 189
    jmp nexus_exception_common
.balign 16
.global nexus_vector_190
nexus_vector_190:
    push 0
    push 190
    jmp nexus_exception_common
.balign 16
.global nexus_vector_191
nexus_vector_191:
    push 0
    push 191
    jmp nexus_exception_common
.balign 16
.global nexus_vector_192
nexus_vector_192:
    push 0
    push 192
    jmp nexus_exception_common
.balign 16
.global nexus_vector_193
nexus_vector_193:
    push 0
    push 193
    jmp nexus_exception_common
.balign 16
.global nexus_vector_194
nexus_vector_194:
    push 0
    push 194
    jmp nexus_exception_common
.balign 16
.global nexus_vector_195
nexus_vector_195:
    push 0
    push 195
    jmp nexus_exception_common
.balign 16
.global nexus_vector_196
nexus_vector_196:
    push 0
    push 196
    jmp nexus_exception_common
.balign 16
.global nexus_vector_197
nexus_vector_197:
    push 0
    push 197
    jmp nexus_exception_common
.balign 16
.global nexus_vector_198
nexus_vector_198:
    push 0
    push 198
    jmp nexus_exception_common
.balign 16
.global nexus_vector_199
nexus_vector_199:
    push 0
    push 199
    jmp nexus_exception_common
.balign 16
.global nexus_vector_200
nexus_vector_200:
    push 0
    push 200
    jmp nexus_exception_common
.balign 16
.global nexus_vector_201
nexus_vector_201:
    push 0
    push 201
    jmp nexus_exception_common
.balign 16
.global nexus_vector_202
nexus_vector_202:
    push 0
    push 202
    jmp nexus_exception_common
.balign 16
.global nexus_vector_203
nexus_vector_203:
    push 0
    push 203
    jmp nexus_exception_common
.balign 16
.global nexus_vector_204
nexus_vector_204:
    push 0
    push 204
    jmp nexus_exception_common
.balign 16
.global nexus_vector_205
nexus_vector_205:
    push 0
    push 205
    jmp nexus_exception_common
.balign 16
.global nexus_vector_206
nexus_vector_206:
    push 0
    push 206
    jmp nexus_exception_common
.balign 16
.global nexus_vector_207
nexus_vector_207:
    push 0
    push 207
    jmp nexus_exception_common
.balign 16
.global nexus_vector_208
nexus_vector_208:
    push 0
    push 208
    jmp nexus_exception_common
.balign 16
.global nexus_vector_209
nexus_vector_209:
    push 0
    push 209
    jmp nexus_exception_common
.balign 16
.global nexus_vector_210
nexus_vector_210:
    push 0
    push 210
    jmp nexus_exception_common
.balign 16
.global nexus_vector_211
nexus_vector_211:
    push 0
    push 211
    jmp nexus_exception_common
.balign 16
.global nexus_vector_212
nexus_vector_212:
    push 0
    push 212
    jmp nexus_exception_common
.balign 16
.global nexus_vector_213
nexus_vector_213:
    push 0
    push 213
    jmp nexus_exception_common
.balign 16
.global nexus_vector_214
nexus_vector_214:
    push 0
    push 214
    jmp nexus_exception_common
.balign 16
.global nexus_vector_215
nexus_vector_215:
    push 0
    push 215
    jmp nexus_exception_common
.balign 16
.global nexus_vector_216
nexus_vector_216:
    push 0
    push 216
    jmp nexus_exception_common
.balign 16
.global nexus_vector_217
nexus_vector_217:
    push 0
    push 217
    jmp nexus_exception_common
.balign 16
.global nexus_vector_218
nexus_vector_218:
    push 0
    push 218
    jmp nexus_exception_common
.balign 16
.global nexus_vector_219
nexus_vector_219:
    push 0
    push 219
    jmp nexus_exception_common
.balign 16
.global nexus_vector_220
nexus_vector_220:
    push 0
    push 220
    jmp nexus_exception_common
.balign 16
.global nexus_vector_221
nexus_vector_221:
    push 0
    push 221
    jmp nexus_exception_common
.balign 16
.global nexus_vector_222
nexus_vector_222:
    push 0
    push 222
    jmp nexus_exception_common
.balign 16
.global nexus_vector_223
nexus_vector_223:
    push 0
    push 223
    jmp nexus_exception_common
.balign 16
.global nexus_vector_224
nexus_vector_224:
    push 0
    push 224
    jmp nexus_exception_common
.balign 16
.global nexus_vector_225
nexus_vector_225:
    push 0
    push 225
    jmp nexus_exception_common
.balign 16
.global nexus_vector_226
nexus_vector_226:
    push 0
    push 226
    jmp nexus_exception_common
.balign 16
.global nexus_vector_227
nexus_vector_227:
    push 0
    push 227
    jmp nexus_exception_common
.balign 16
.global nexus_vector_228
nexus_vector_228:
    push 0
    push 228
    jmp nexus_exception_common
.balign 16
.global nexus_vector_229
nexus_vector_229:
    push 0
    push 229
    jmp nexus_exception_common
.balign 16
.global nexus_vector_230
nexus_vector_230:
    push 0
    push 230
    jmp nexus_exception_common
.balign 16
.global nexus_vector_231
nexus_vector_231:
    push 0
    push 231
    jmp nexus_exception_common
.balign 16
.global nexus_vector_232
nexus_vector_232:
    push 0
    push 232
    jmp nexus_exception_common
.balign 16
.global nexus_vector_233
nexus_vector_233:
    push 0
    push 233
    jmp nexus_exception_common
.balign 16
.global nexus_vector_234
nexus_vector_234:
    push 0
    push 234
    jmp nexus_exception_common
.balign 16
.global nexus_vector_235
nexus_vector_235:
    push 0
    push 235
    jmp nexus_exception_common
.balign 16
.global nexus_vector_236
nexus_vector_236:
    push 0
    push 236
    jmp nexus_exception_common
.balign 16
.global nexus_vector_237
nexus_vector_237:
    push 0
    push 237
    jmp nexus_exception_common
.balign 16
.global nexus_vector_238
nexus_vector_238:
    push 0
    push 238
    jmp nexus_exception_common
.balign 16
.global nexus_vector_239
nexus_vector_239:
    push 0
    push 239
    jmp nexus_exception_common
.balign 16
.global nexus_vector_240
nexus_vector_240:
    push 0
    push 240
    jmp nexus_exception_common
.balign 16
.global nexus_vector_241
nexus_vector_241:
    push 0
    push 241
    jmp nexus_exception_common
.balign 16
.global nexus_vector_242
nexus_vector_242:
    push 0
    push 242
    jmp nexus_exception_common
.balign 16
.global nexus_vector_243
nexus_vector_243:
    push 0
    push 243
    jmp nexus_exception_common
.balign 16
.global nexus_vector_244
nexus_vector_244:
    push 0
    push 244
    jmp nexus_exception_common
.balign 16
.global nexus_vector_245
nexus_vector_245:
    push 0
    push 245
    jmp nexus_exception_common
.balign 16
.global nexus_vector_246
nexus_vector_246:
    push 0
    push 246
    jmp nexus_exception_common
.balign 16
.global nexus_vector_247
nexus_vector_247:
    push 0
    push 247
    jmp nexus_exception_common
.balign 16
.global nexus_vector_248
nexus_vector_248:
    push 0
    push 248
    jmp nexus_exception_common
.balign 16
.global nexus_vector_249
nexus_vector_249:
    push 0
    push 249
    jmp nexus_exception_common
.balign 16
.global nexus_vector_250
nexus_vector_250:
    push 0
    push 250
    jmp nexus_exception_common
.balign 16
.global nexus_vector_251
nexus_vector_251:
    push 0
    push 251
    jmp nexus_exception_common
.balign 16
.global nexus_vector_252
nexus_vector_252:
    push 0
    push 252
    jmp nexus_exception_common
.balign 16
.global nexus_vector_253
nexus_vector_253:
    push 0
    push 253
    jmp nexus_exception_common
.balign 16
.global nexus_vector_254
nexus_vector_254:
    push 0
    push 254
    jmp nexus_exception_common
.balign 16
.global nexus_vector_255
nexus_vector_255:
    push 0
    push 255
    jmp nexus_exception_common

